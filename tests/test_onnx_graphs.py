"""from_onnx on the graphs found in the wild: Constant-node weights, opset 11, softmax heads,
several outputs; the layer list; clear errors; the optional gradient backend."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_helpers import export_torch, initializers_to_constants, torch_net

from agnostic_cam import Explainer
from agnostic_cam.adapters.onnx import adapter as onnx_adapter
from agnostic_cam.adapters.onnx.layers import detect_layout

SIZE = 24
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net(torch):
    return torch_net()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(5).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)


def _close(a, b):
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-4)
    np.testing.assert_allclose(a.raw, b.raw, atol=1e-4 * max(1.0, np.abs(b.raw).max()))


def test_constant_node_weights(net, x):
    plain = export_torch(net, SIZE)
    const = initializers_to_constants(plain)
    assert len(const.graph.initializer) == 0 and any(n.op_type == "Constant" for n in const.graph.node)
    a, b = Explainer.from_onnx(plain, progress=False), Explainer.from_onnx(const, progress=False)
    assert [ly.name for ly in b.layers()] == [ly.name for ly in a.layers()]   # weights are not "layers"
    assert b.layer == a.layer
    for method in ("scorecam", "ablationcam", "cam", "gradcam"):
        _close(b.explain(x, method, target=[1, 4]), a.explain(x, method, target=[1, 4]))


def test_opset_11_and_older_rejected(net, x):
    ref = Explainer.from_torch(net, "feat", progress=False)
    ex = Explainer.from_onnx(export_torch(net, SIZE, opset=11), progress=False)
    for method in ("scorecam", "ablationcam", "gradcam"):
        _close(ex.explain(x, method, target=[0, 2]), ref.explain(x, method, target=[0, 2]))
    old = export_torch(net, SIZE, opset=11)
    old.opset_import[0].version = 9
    with pytest.raises(ValueError, match="opset 9.*opset 11 or newer.*convert_version"):
        Explainer.from_onnx(old)


def test_logits_cut_before_softmax(torch, x):
    net = torch_net(softmax=True)
    proto = export_torch(net, SIZE)
    probs = Explainer.from_onnx(proto, progress=False)
    np.testing.assert_allclose(probs.predict(x).sum(axis=1), 1, rtol=1e-5)
    ex = Explainer.from_onnx(proto, output="logits", progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(ex.predict(x), net.fc(net.feat(net.bn(net.conv2(torch.relu(net.conv1(
            torch.from_numpy(x)))))).mean(dim=(2, 3))).numpy(), rtol=1e-4, atol=1e-5)
    ref = Explainer.from_torch(net, "feat", output="logits", progress=False)
    for method in ("cam", "ablationcam", "gradcam"):       # CAM needs the linear head: only valid on logits
        _close(ex.explain(x, method, target=[3, 1]), ref.explain(x, method, target=[3, 1]))
    with pytest.raises(ValueError, match="GAP|global-average-pool"):
        probs.explain(x, "cam", target=[3, 1])
    with pytest.raises(ValueError, match="produced by a Softmax.*output=None"):  # no softmax to cut
        Explainer.from_onnx(export_torch(torch_net(), SIZE), output="logits")


def test_several_outputs_choose_by_name(torch, x):
    net = torch_net(two_heads=True)
    proto = export_torch(net, SIZE, names=["aux", "logits"])   # the name 'logits' wins over the keyword
    with torch.no_grad():
        aux, logits = (t.numpy() for t in net(torch.from_numpy(x)))
    first = Explainer.from_onnx(proto, progress=False)
    assert first.adapter.output_name == "aux"
    np.testing.assert_allclose(first.predict(x), aux, rtol=1e-4, atol=1e-5)
    ex = Explainer.from_onnx(proto, output="logits", progress=False)
    np.testing.assert_allclose(ex.predict(x), logits, rtol=1e-4, atol=1e-5)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, inp):
            return self.net(inp)[1]

    ref = Explainer.from_torch(Logits(), "net.feat", progress=False)
    for method in ("scorecam", "gradcam"):
        _close(ex.explain(x, method, target=[2, 4]), ref.explain(x, method, target=[2, 4]))
    with pytest.raises(ValueError, match=r"no output named 'prob'.*\['aux', 'logits'\]"):
        Explainer.from_onnx(proto, output="prob")


def test_layers_listing_and_choice(net):
    ex = Explainer.from_onnx(export_torch(net, SIZE), progress=False)
    layers = ex.layers()
    assert [(ly.op_type, ly.shape[1:]) for ly in layers] == [
        ("Conv", (8, SIZE, SIZE)), ("Relu", (8, SIZE, SIZE)), ("Conv", (12, SIZE // 2, SIZE // 2)),
        ("Relu", (12, SIZE // 2, SIZE // 2))]
    assert ex.layer == layers[3].name and ex.adapter.picked            # last map before global pooling
    by_node = Explainer.from_onnx(export_torch(net, SIZE), target_layer=layers[2].node)
    assert by_node.layer == layers[2].name and not by_node.adapter.picked


def test_bad_input_errors(net, x, tmp_path):
    proto = export_torch(net, SIZE)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        Explainer.from_onnx(b"definitely not onnx")
    trunc = tmp_path / "t.onnx"
    trunc.write_bytes(proto.SerializeToString()[:300])
    with pytest.raises(ValueError, match="truncated"):
        Explainer.from_onnx(trunc)
    with pytest.raises(FileNotFoundError, match="not found"):
        Explainer.from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="path, the model's bytes or an onnx.ModelProto"):
        Explainer.from_onnx(42)
    with pytest.raises(ValueError, match=r"no input named 'img'.*\['image'\]"):
        Explainer.from_onnx(proto, input_name="img")
    flat = next(n.output[0] for n in proto.graph.node if n.op_type == "Gemm")   # (N, 5): not a map
    with pytest.raises(ValueError, match="not a spatial"):
        Explainer.from_onnx(proto, target_layer=flat)
    from torch import nn

    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    gap = export_torch(seq, SIZE)
    pooled = [ly for ly in Explainer.from_onnx(gap).layers() if ly.op_type == "GlobalAveragePool"][0].name
    with pytest.raises(ValueError, match="1x1 map"):
        Explainer.from_onnx(gap, target_layer=pooled)
    assert Explainer.from_onnx(gap).adapter.layer.op_type == "Relu"      # not the pooled 1x1 tensor
    with pytest.raises(ValueError, match="no tensor or node named 'relu9'"):
        Explainer.from_onnx(proto, target_layer="relu9")
    with pytest.raises(ValueError, match="layout must be"):
        Explainer.from_onnx(proto, layout="HWC")
    ex = Explainer.from_onnx(proto, progress=False)
    with pytest.raises(ValueError, match=r"size \(24, 24\).*Resize"):
        ex.explain(x[:, :, :20, :20], "scorecam")
    with pytest.raises(ValueError, match="transpose"):
        ex.explain(x.transpose(0, 2, 3, 1), "scorecam")


def test_explaining_does_not_change_the_model(net, x):
    proto = export_torch(net, SIZE)
    before = proto.SerializeToString()
    ex = Explainer.from_onnx(proto, progress=False)
    for method in ("scorecam", "ablationcam", "gradcam"):
        ex.explain(x, method)
    assert proto.SerializeToString() == before


def test_without_gradient_backend_forward_methods_only(net, x, monkeypatch):
    proto = export_torch(net, SIZE)
    ex = Explainer.from_onnx(proto, gradients=False, progress=False)
    from agnostic_cam.methods import Needs, registry

    gradient = (Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS | Needs.HVP | Needs.BIAS_GRADIENTS
                | Needs.ATTENTION_GRADIENTS | Needs.BLOCK_GRADIENTS)
    # attention methods are listed only for graphs with attention maps (this is a CNN)
    # drise explains a detector's boxes only and is never listed (Explainer.methods)
    forward_only = sorted(n for n, c in registry().items() if not c.needs & gradient and not c.needs.uses_attention
                          and not c.detection_only)
    assert {"ablationcam", "cam", "eigencam", "scorecam", "occlusion", "rise", "kernelshap", "lime"} <= set(forward_only)
    assert ex.methods == forward_only
    assert not [n for n in ex.methods if registry()[n].needs & gradient]  # no gradient method is listed
    assert "gradcam" not in ex.methods and "saliency" not in ex.methods
    with pytest.raises(ValueError, match=r"pip install 'agnostic-cam\[onnx-grad\]'"):
        ex.explain(x, "gradcam")
    assert ex.explain(x, "scorecam").heatmap.shape == (2, SIZE, SIZE)
    monkeypatch.setattr(onnx_adapter, "gradient_backend_available", lambda: False)
    assert "gradcam" not in Explainer.from_onnx(proto).methods
    with pytest.raises(ImportError, match=r"agnostic-cam\[onnx-grad\]"):
        Explainer.from_onnx(proto, gradients=True)
    monkeypatch.setitem(sys.modules, "onnx2torch", None)                   # the package missing
    monkeypatch.delitem(sys.modules, "agnostic_cam.adapters.onnx.torch_gradients", raising=False)
    with pytest.raises(ImportError, match=r"agnostic-cam\[onnx-grad\]"):
        importlib.import_module("agnostic_cam.adapters.onnx.torch_gradients")


def test_forward_path_imports_no_framework(net, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(export_torch(net, SIZE), str(path))
    code = f"""
import sys, json, numpy as np
import agnostic_cam, agnostic_cam.evaluation.metrics, agnostic_cam.cli, agnostic_cam.inputs.preprocess, agnostic_cam.audit
from agnostic_cam import Explainer
ex = Explainer.from_onnx({str(path)!r}, progress=False)
h = ex.explain(np.ones((1, 3, {SIZE}, {SIZE}), np.float32), "scorecam").heatmap
print(json.dumps([m for m in ("torch", "tensorflow", "keras", "onnx2torch") if m in sys.modules]))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_detect_layout():
    m = onnx.ModelProto()
    assert detect_layout(("n", 3, 32, 32), m, "x") == "NCHW"
    assert detect_layout(("n", 32, 32, 3), m, "x") == "NHWC"
    assert detect_layout(("n", 1, 28, 28), m, "x") == "NCHW"
    t = onnx.helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2])
    m.graph.node.append(t)
    assert detect_layout(("n", None, None, None), m, "x") == "NHWC"     # dynamic: read from the graph


def test_channels_last_target_tensor(torch):
    """A graph that takes NHWC images and transposes its feature map back to NHWC before pooling
    (what some exporters emit): the NHWC tensor is detected as such and explaining it gives the
    same maps as explaining the NCHW tensor it was transposed from; Grad-CAM equals a hand-written
    autograd reference."""
    from torch import nn

    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.fc = nn.Linear(6, 4)

        def forward(self, x, keep=None):
            a = torch.relu(self.conv(x.permute(0, 3, 1, 2)))      # NCHW inside
            f = a.permute(0, 2, 3, 1)                             # NHWC feature map
            if keep is not None:
                keep.append(f)
            return self.fc(f.mean(dim=(1, 2)))

    net = ChannelsLast().eval()
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 12, 12, 3),), buf, dynamo=False, opset_version=13,
                          input_names=["image"], output_names=["y"], dynamic_axes={"image": {0: "n"}, "y": {0: "n"}})
    proto = onnx.load_from_string(buf.getvalue())
    ex = Explainer.from_onnx(proto, progress=False)
    assert ex.adapter.layout == "NHWC"
    nhwc = ex.adapter.layer
    assert nhwc.op_type == "Transpose" and nhwc.layout == "NHWC" and nhwc.shape == (1, 12, 12, 6)
    relu = next(ly for ly in ex.layers() if ly.op_type == "Relu")
    assert relu.layout == "NCHW"
    other = Explainer.from_onnx(proto, target_layer=relu.name, progress=False)
    x = np.random.default_rng(2).normal(size=(2, 12, 12, 3)).astype(np.float32)
    for method in ("scorecam", "ablationcam", "eigencam", "gradcam"):
        _close(ex.explain(x, method, target=[1, 3]), other.explain(x, method, target=[1, 3]))

    keep = []
    xt = torch.from_numpy(x)
    y = net(xt, keep)
    (g,) = torch.autograd.grad(y[[0, 1], [1, 3]].sum(), keep[0])
    a, g = keep[0].detach().numpy(), g.numpy()                   # (N, h, w, C)
    ref = np.maximum(np.einsum("nc,nhwc->nhw", g.mean(axis=(1, 2)), a), 0)
    np.testing.assert_allclose(np.maximum(ex.explain(x, "gradcam", target=[1, 3]).raw, 0), ref, atol=1e-5)


def test_resnet18_export_default_layer_is_layer4(resnet18):
    """A real architecture (residual blocks, seeded random weights): the default layer is the output
    of layer4 (the Relu after the last residual Add) and maps equal from_torch's at 'layer4'."""
    proto = export_torch(resnet18, 64)
    ex = Explainer.from_onnx(proto, progress=False)
    assert ex.adapter.layer.op_type == "Relu" and ex.adapter.layer.shape == (1, 512, 2, 2)
    assert ex.layer.startswith("/layer4/layer4.1/")
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    ref = Explainer.from_torch(resnet18, "layer4", progress=False)
    for method in ("gradcam", "eigencam"):
        _close(ex.explain(x, method, target=[7, 300]), ref.explain(x, method, target=[7, 300]))


def test_several_image_inputs_need_input_name():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3, 8, 8]) for n in ("a", "b")]
    g = helper.make_graph(nodes, "two", vi, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ValueError, match=r"2 inputs \['a', 'b'\].*input_name="):
        Explainer.from_onnx(proto)
    with pytest.raises(ValueError, match=r"other input\(s\) \['b'\]"):   # 'b' could never be fed (issue #11)
        Explainer.from_onnx(proto, input_name="a")
