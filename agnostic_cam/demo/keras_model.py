"""The demo CNN as a Keras 3 model (NHWC), with weights copied from the PyTorch demo model.

Same layers, same names (``conv1`` ... ``relu3``, ``fc``), same numbers: a twin for
cross-framework tests, the comparison script and the demo.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.demo.data import CLASSES

TARGET_LAYER = "relu3"
BN_EPS = 1e-5  # PyTorch's BatchNorm2d default (Keras' own default is 1e-3)


def keras_demo_net(num_classes: int = len(CLASSES), size: int = 64):
    """Three conv-BN-ReLU blocks, global average pool, dense head; input (N, size, size, 3)."""
    import keras
    from keras import layers

    x = inp = keras.Input((size, size, 3), name="input")
    for i, ch in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(ch, 3, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(epsilon=BN_EPS, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i < 3:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    out = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inp, out, name="demo_net")


def copy_torch_weights(kmodel, weights: dict[str, np.ndarray]) -> None:
    """Load the PyTorch demo model's ``state_dict`` (as NumPy, see ``numpy_weights``) into ``kmodel``."""
    for i in (1, 2, 3):
        w = weights[f"features.conv{i}.weight"]  # (O, I, kh, kw) -> (kh, kw, I, O)
        kmodel.get_layer(f"conv{i}").set_weights([w.transpose(2, 3, 1, 0), weights[f"features.conv{i}.bias"]])
        kmodel.get_layer(f"bn{i}").set_weights([weights[f"features.bn{i}.{k}"] for k in
                                                ("weight", "bias", "running_mean", "running_var")])
    kmodel.get_layer("fc").set_weights([weights["fc.weight"].T, weights["fc.bias"]])


def keras_twin(torch_model=None):
    """The Keras demo model carrying ``torch_model``'s weights (default: the trained demo model)."""
    from agnostic_cam.demo.torch_model import load_demo_net, numpy_weights

    torch_model = torch_model if torch_model is not None else load_demo_net()
    k = keras_demo_net()
    copy_torch_weights(k, numpy_weights(torch_model))
    return k
