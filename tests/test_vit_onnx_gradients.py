"""Gradient methods on exported Swin / ViT ONNX files (through the onnx2torch gradient backend), the
layer listing of transformer graphs, and the graph rewrites that make them convertible.

Reduced for time: torchvision's ``SwinTransformer`` class with 2 stages (embed_dim 8, depths [2, 2],
window 4, 64 px: both stages have a shifted-window block, so Swin's Pad / Roll / attention mask are
exported) and ``VisionTransformer`` (hidden_dim 32, 2 layers, 48 px); random seeded weights. Each
model is exported once by the TorchScript exporter (``dynamo=False``, opset 17) and once by the
default dynamo exporter (opset 18+, which writes ``Pad-18`` / ``ConstantOfShape-20`` that ONNX's
version converter cannot take down to opset 17). tests/test_vit_onnx.py covers the 4-stage Swin's
``features`` tensor and the forward methods.
"""
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("onnx2torch")

from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.errors import OptionError  # noqa: E402
from vit_helpers import randomise_norms  # noqa: E402

GRADIENT = ["gradcam", "gradcam++", "hirescam", "layercam", "xgradcam"]


def export(model, size, path, dynamo):
    if dynamo:  # the default exporter, as a user calls it (a batch of 2 lets the batch axis stay dynamic)
        torch.onnx.export(model, (torch.zeros(2, 3, size, size),), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}})
    else:
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return str(path)


def exported(model, size, tmp_path, dynamo):
    """(model, ONNX path, from_onnx explainer with no layer given, its listed layers)."""
    path = export(model, size, tmp_path / "model.onnx", dynamo)
    b = Explainer.from_onnx(path, progress=False)
    return model, path, b, b.layers()


def swin():
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return randomise_norms(SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[1, 2],
                                           window_size=[4, 4], num_classes=10).eval())


def vit():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return randomise_norms(VisionTransformer(image_size=48, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32,
                                             mlp_dim=64, num_classes=10).eval())


def agree(a, b, size, methods=GRADIENT):
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    for m in methods:
        ea, eb = a.explain(x, m, target=[1, 2]), b.explain(x, m, target=[1, 2])
        assert not ea.degenerate.any(), f"{m}: the reference map is degenerate, the comparison would prove nothing"
        assert np.abs(ea.heatmap - eb.heatmap).max() <= 1e-4, f"{m}: {np.abs(ea.heatmap - eb.heatmap).max()}"


def stage_output(path, stage):
    """The ONNX tensor of torchvision Swin's ``features.<stage>`` output: the last residual Add in it
    (legacy names carry the module path; dynamo names do not, its metadata does)."""
    model = onnx.load(path)
    out = None
    for n in model.graph.node:
        scopes = n.name + "".join(p.value for p in n.metadata_props if p.key == "pkg.torch.onnx.name_scopes")
        if n.op_type == "Add" and f"features.{stage}" in scopes.replace("/", "."):
            out = n.output[0]
    return out


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-opset17", "dynamo"])
def test_swin_onnx_listing_default_and_gradients(tmp_path, dynamo):
    model, path, b, layers = exported(swin(), 64, tmp_path, dynamo)
    # both stages are listed channels-last, the last one too (static shape inference loses Swin's
    # shapes after the first window reshape in the TorchScript export; one ONNX Runtime run fills them)
    nhwc = {ly.shape[1:] for ly in layers if ly.layout == "NHWC"}
    assert (16, 16, 8) in nhwc and (8, 8, 16) in nhwc, nhwc
    assert not any(ly.op_type == "Softmax" for ly in layers), "attention weights offered as a layer"
    # every listed map is one image's stage grid with the model's channel counts: no per-window or
    # per-head attention tensor (N * windows, heads, T, T / d) is offered
    for ly in layers:
        assert ly.spatial in {(16, 16), (8, 8), (1, 1)} and ly.channels in {8, 16, 32, 64}, (ly.name, ly.shape, ly.layout)
    # the default is the last map before global pooling: torchvision's `permute` output (NCHW)
    chosen = next(ly for ly in layers if ly.name == b.layer)
    assert chosen.layout == "NCHW" and chosen.shape[1:] == (16, 8, 8) and chosen.op_type == "Transpose"
    # the PyTorch side runs gradient methods only: no input_shape, so no export at construction (Swin: ~1 s each)
    a = Explainer.from_torch(model, "permute", progress=False)
    agree(a, b, 64)
    # a channels-last tensor inside the network, found and read as NHWC by itself
    inner = stage_output(path, 1)
    a1 = Explainer.from_torch(model, "features.1", progress=False)
    b1 = Explainer.from_onnx(path, target_layer=inner, progress=False)
    assert b1.adapter.layer.layout == "NHWC"
    agree(a1, b1, 64)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-opset17", "dynamo"])
def test_vit_onnx_default_and_gradients(tmp_path, dynamo):
    model, path, b, layers = exported(vit(), 48, tmp_path, dynamo)
    # no per-head tensors (N, heads, T, d) / attention weights: the only rank-4 layer is the patch conv
    assert [ly.op_type for ly in layers if ly.layout in ("NCHW", "NHWC")] == ["Conv"], layers
    assert all(ly.layout == "tokens(prefix=1, grid=3x3)" for ly in layers if ly.op_type != "Conv")
    # the final norm feeds the head through the class token only (its patch tokens get no gradient):
    # listed but not picked; the default is the last block's ln_1, pytorch-grad-cam's advice for ViTs
    last = layers[-1]
    assert last.op_type == "LayerNormalization" and not last.live
    ln = [n for n in onnx.load(path).graph.node if n.op_type == "LayerNormalization"]
    assert b.layer == ln[-3].output[0]
    a = Explainer.from_torch(model, "encoder.layers.encoder_layer_1.ln_1", input_shape=(3, 48, 48), progress=False)
    agree(a, b, 48)


def test_legalize_newer_ops_and_layer_norm_of_unknown_shape():
    """Pad-18 and ConstantOfShape-20 (no down-adapter in ONNX's version converter) and a
    LayerNormalization whose input shape static inference cannot give (onnx2torch sized its
    nn.LayerNorm from it: normalized_shape=[0]) convert and compute what ONNX Runtime computes."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnx2torch import convert

    from agnostic_cam.adapters.onnx.legal import legalize

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int64), "pads"),
             numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "bias")]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),  # (n, h+2, w+2, c)
             helper.make_node("Shape", ["p"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Add", ["p", "c"], ["a"]),
             helper.make_node("LayerNormalization", ["a", "scale", "bias"], ["y"], axis=-1, epsilon=1e-5)]
    # every input dim symbolic: shape inference cannot give the normalised (last) axis its size
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "h", "w", "c"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    x = rng.normal(size=(2, 5, 4, 6)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    module = convert(legalize(model))
    got = module(torch.from_numpy(x)).detach().numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5


def test_from_onnx_refuses_reshape_and_says_what_to_pass(tmp_path):
    path = export(vit(), 48, tmp_path / "vit.onnx", dynamo=False)
    with pytest.raises(OptionError, match="layer_layout='tokens'.*'NHWC'"):
        Explainer.from_onnx(path, reshape=lambda t: t)
