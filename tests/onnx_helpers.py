"""Builders of small ONNX test models (seeded random weights, no downloads)."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
from onnx import numpy_helper


def torch_net(seed: int = 1, softmax: bool = False, two_heads: bool = False):
    """conv-ReLU-conv(stride 2)-BN-ReLU-GAP-linear; ``feat`` is the last ReLU (the natural target)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 12, 3, padding=1, stride=2)
            self.bn = nn.BatchNorm2d(12)
            self.feat = nn.ReLU()
            self.fc = nn.Linear(12, 5)
            self.aux = nn.Linear(12, 2)
            self.sm = nn.Softmax(dim=1)

        def forward(self, x):
            a = self.feat(self.bn(self.conv2(torch.relu(self.conv1(x)))))
            p = a.mean(dim=(2, 3))
            y = self.fc(p)
            if softmax:
                y = self.sm(y)
            if two_heads:
                return self.aux(p), y
            return y

    torch.manual_seed(seed)
    net = Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net


def export_torch(net, size: int = 24, dynamic: bool = True, opset: int = 17, batch: int = 1, names=None) -> onnx.ModelProto:
    """ONNX export of a torch model: dynamic batch, or batch fixed to ``batch``."""
    import torch

    names = names or ["output"]
    buf = io.BytesIO()
    axes = {"image": {0: "batch"}, **{n: {0: "batch"} for n in names}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(batch, 3, size, size),), buf, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=names, dynamic_axes=axes)
    return onnx.load_from_string(buf.getvalue())


def initializers_to_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of ``model`` whose weights are ``Constant`` nodes instead of initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    consts = [onnx.helper.make_node("Constant", [], [i.name], value=i, name=f"const_{i.name}")
              for i in m.graph.initializer]
    init_names = {i.name for i in m.graph.initializer}
    keep_inputs = [i for i in m.graph.input if i.name not in init_names]
    nodes = consts + list(m.graph.node)
    del m.graph.initializer[:]
    del m.graph.input[:]
    m.graph.input.extend(keep_inputs)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m)
    return m


def keras_twin(net, size: int = 24, softmax: bool = False):
    """A Keras (NHWC) model with the same weights as :func:`torch_net` (one head; a softmax
    activation on the Dense layer when ``softmax``)."""
    # In this environment importing torchvision (which onnx2torch imports) after TensorFlow
    # segfaults; importing it first is safe. The ONNX gradient backend will need it later.
    import onnx2torch  # noqa: F401
    import keras

    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(12, 3, strides=2, padding="valid", name="conv2")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="bn")(x)
    x = keras.layers.ReLU(name="feat")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, name="fc", activation="softmax" if softmax else None)(x)
    model = keras.Model(inp, out)
    model.get_layer("conv1").set_weights([sd["conv1.weight"].transpose(2, 3, 1, 0), sd["conv1.bias"]])
    model.get_layer("conv2").set_weights([sd["conv2.weight"].transpose(2, 3, 1, 0), sd["conv2.bias"]])
    model.get_layer("bn").set_weights([sd["bn.weight"], sd["bn.bias"], sd["bn.running_mean"], sd["bn.running_var"]])
    model.get_layer("fc").set_weights([sd["fc.weight"].T, sd["fc.bias"]])
    model(np.zeros((1, size, size, 3), np.float32))
    return model


def keras_to_onnx(model, size: int = 24, opset: int = 13) -> onnx.ModelProto:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    return proto


def weights_of(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
