"""Models as users load them (Hugging Face ``transformers``, timm, open_clip) explained with no options.

The matrix (tests/hub_zoo.py) builds each family from a tiny config with seeded random weights,
nothing downloaded. Reduced so the sweep stays fast: hidden sizes 8-64, 1-2 blocks per stage,
1-2 heads, 64-98 px, 2 images. For each family, ``Explainer.from_torch(model)`` with no option at all
(no layer, no input_shape, no output=, no layout) must:
- pick the expected layer: a main-path tensor of the last stage (the last block's first norm of a
  class-token ViT, whose later tokens the head reads only at the class token, pytorch-grad-cam's ViT
  recipe; the final norm of a mean-pooled token model; the last stage's norm of a Swin; the last stage
  of a CNN; the last backbone stage of a segmenter), never a per-head tensor, a weight-only tensor,
  the patch-embedding stem or the head;
- read it with the expected layout (class / distillation / register tokens and the patch grid);
- explain the expected output (the ``logits`` of a ModelOutput, a CLIP tower's embedding);
- give Grad-CAM and Eigen-CAM maps equal to pytorch-grad-cam's (the independent reference) at that
  layer with its ``reshape_transform`` (<= 1e-4; Eigen-CAM up to the sign of its component).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pgc = pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget  # noqa: E402

import hub_zoo as Z  # noqa: E402
from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.targets.tasks import SegmentationMask  # noqa: E402

TOL = 1e-4

# family: (expected layer, expected layout, explained key of the output (None: a tensor))
MATRIX = {
    Z.hf_vit: ("vit.layers.1.layernorm_before", "tokens(prefix=1, grid=4x4)", "logits"),
    Z.hf_deit: ("deit.layers.1.layernorm_before", "tokens(prefix=2, grid=4x4)", "logits"),
    Z.hf_beit: ("beit.layers.1.layernorm_before", "tokens(prefix=1, grid=4x4)", "logits"),
    Z.hf_dinov2: ("dinov2.layernorm", "tokens(prefix=1, grid=5x5)", "logits"),
    Z.hf_dinov2_registers: ("dinov2_with_registers.layernorm", "tokens(prefix=5, grid=5x5)", "logits"),
    Z.hf_swin: ("swin.layernorm", "tokens(prefix=0, grid=4x4)", "logits"),
    Z.hf_convnext: ("convnext.encoder.stages.3", "NCHW", "logits"),
    Z.hf_resnet: ("resnet.encoder.stages.3", "NCHW", "logits"),
    Z.hf_efficientnet: ("efficientnet.encoder.top_activation", "NCHW", "logits"),
    Z.hf_mobilevit: ("mobilevit.conv_1x1_exp", "NCHW", "logits"),
    Z.hf_segformer: ("segformer.stages.1", "NCHW", "logits"),
    Z.hf_clip_vision: ("vision_model.encoder.layers.1.layer_norm1", "tokens(prefix=1, grid=4x4)", "image_embeds"),
    Z.timm_vit: ("blocks.1.norm1", "tokens(prefix=1, grid=4x4)", None),
    Z.timm_deit: ("blocks.1.norm1", "tokens(prefix=2, grid=4x4)", None),
    Z.timm_eva02: ("norm", "tokens(prefix=1, grid=7x7)", None),
    Z.timm_swin: ("norm", "NHWC", None),
    Z.timm_convnext: ("norm_pre", "NCHW", None),
    Z.timm_efficientvit: ("stages", "NCHW", None),
    Z.timm_fastvit: ("final_conv", "NCHW", None),
    Z.timm_resnet: ("layer4", "NCHW", None),
    Z.timm_regnet: ("final_conv", "NCHW", None),
    Z.timm_mobilenetv4: ("blocks", "NCHW", None),
    Z.open_clip_vit: ("visual.transformer.resblocks.1.ln_1", "tokens(prefix=1, grid=4x4)", "image_features"),
    Z.open_clip_resnet: ("visual.layer4", "NCHW", "image_features"),
}


class Selected(torch.nn.Module):
    """The reference's model: pytorch-grad-cam needs a model that returns the explained tensor."""

    def __init__(self, model, key):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x):
        out = self.model(x)
        return out if self.key is None else out[self.key]


def reshape_for(layout: str):
    """pytorch-grad-cam's reshape_transform for a layout string (written from the expected layout)."""
    if layout == "NCHW":
        return None
    if layout == "NHWC":
        return lambda t: t.permute(0, 3, 1, 2)
    prefix = int(layout.split("prefix=")[1].split(",")[0])
    h, w = (int(v) for v in layout.split("grid=")[1].rstrip(")").split("x"))
    return lambda t: t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2)).permute(0, 3, 1, 2)


def eigen_up_to_sign(ours: np.ndarray, ex, x, ref: np.ndarray, target) -> float:
    from agnostic_cam.core.imaging import cam_to_heatmap
    from agnostic_cam.methods import Needs
    from agnostic_cam.methods.eigencam import first_component_projection
    from agnostic_cam.targets import TargetSpec

    p = first_component_projection(ex.capture(x, TargetSpec(target or 0, len(x)), Needs.ACTIVATIONS).activations)
    both = [np.abs(cam_to_heatmap(s * p, x.shape[2:]) - ref).reshape(len(x), -1).max(axis=1) for s in (1, -1)]
    assert np.abs(ours - ref).max() <= TOL or np.minimum(*both).max() <= TOL  # ours is one of the two signs
    return float(np.minimum(*both).max())


@pytest.mark.parametrize("build", list(MATRIX), ids=lambda b: b.__name__)
def test_no_options_equals_pytorch_grad_cam(build):
    expected_layer, expected_layout, key = MATRIX[build]
    model, side = build()
    ex = Explainer.from_torch(model, progress=False)  # no options: what a new user writes
    x = np.random.default_rng(0).normal(size=(2, 3, side, side)).astype(np.float32)
    assert ex.layer == expected_layer
    layer = dict(model.named_modules())[expected_layer]

    if build is Z.hf_segformer:
        mask = np.zeros((side // 4, side // 4), np.float32)
        mask[: side // 8] = 1
        ours_target, ref_targets = SegmentationMask(1, mask), [SemanticSegmentationTarget(1, mask)] * len(x)
    else:
        ours_target = None  # the top-1 class / embedding dimension
    got = ex.explain(x, "gradcam", target=ours_target)
    if build is not Z.hf_segformer:
        ref_targets = [ClassifierOutputTarget(int(c)) for c in got.targets]
    assert str(ex.adapter.layer_layout) == expected_layout
    described = ex.describe()
    assert f"layer {expected_layer!r}" in described and "picked automatically" in described
    assert (f"output: {key!r}" if key else "output: the model's output") in described

    ref_model = Selected(model, key)
    with pgc.GradCAM(model=ref_model, target_layers=[layer], reshape_transform=reshape_for(expected_layout)) as cam:
        ref = cam(input_tensor=torch.from_numpy(x), targets=ref_targets)
    assert np.abs(got.heatmap - ref).max() <= TOL, f"Grad-CAM: max abs diff {np.abs(got.heatmap - ref).max()}"
    assert got.heatmap.std() > 0

    eig = ex.explain(x, "eigencam", target=ours_target).heatmap
    with pgc.EigenCAM(model=ref_model, target_layers=[layer], reshape_transform=reshape_for(expected_layout)) as cam:
        ref = cam(input_tensor=torch.from_numpy(x), targets=None)
    assert eigen_up_to_sign(eig, ex, x, ref, ours_target) <= TOL


@pytest.mark.parametrize("build", [b for b in MATRIX if b is not Z.hf_segformer], ids=lambda b: b.__name__)
def test_no_declared_layout_reads_the_layer_wrongly(build):
    """Every documented ``layer_layout=`` spelling, declared on the automatically chosen layer of each family:
    either a typed error (which names the right reading) or exactly the map of the correct reading, never
    a map from a misread tensor (a token tensor read as NCHW, channels-last read as channels-first, ...).
    The correct map is pytorch-grad-cam's with the reshape written from the expected layout. (SegFormer is
    left out: its target is a mask, and its chosen layer is an NCHW map like the CNNs'.)"""
    from agnostic_cam.errors import AgnosticCamError

    expected_layer, expected_layout, key = MATRIX[build]
    model, side = build()
    x = np.random.default_rng(0).normal(size=(2, 3, side, side)).astype(np.float32)
    layer = dict(model.named_modules())[expected_layer]
    ref_model = Selected(model, key)
    ref, accepted = None, []
    for declared in ("NCHW", "NHWC", "tokens"):
        try:
            ex = Explainer.from_torch(model, expected_layer, layer_layout=declared, progress=False)
            got = ex.explain(x, "gradcam")
        except AgnosticCamError:
            continue  # refused, with a typed error: never a wrong map
        if ref is None:
            targets = [ClassifierOutputTarget(int(c)) for c in got.targets]
            with pgc.GradCAM(model=ref_model, target_layers=[layer],
                             reshape_transform=reshape_for(expected_layout)) as cam:
                ref = cam(input_tensor=torch.from_numpy(x), targets=targets)
        assert np.abs(got.heatmap - ref).max() <= TOL, f"layer_layout={declared!r} gave a map from a misread tensor"
        accepted.append(declared)
    assert expected_layout.split("(")[0] in accepted  # the right reading, declared, is taken


# DINOv2-with-registers is left out: its export needs the aten::_upsample_bicubic2d_aa fallback (issue #25's work)
@pytest.mark.parametrize("build", [b for b in MATRIX if b is not Z.hf_dinov2_registers], ids=lambda b: b.__name__)
def test_onnx_export_picks_the_same_layer_as_pytorch(build, tmp_path):
    """The ONNX file of each hub model, explained with no options, reads the tensor PyTorch's rule picks: the
    same rule (auto_layer.choose) over the graph's tensors, with the output head told from node scopes (a timm
    EfficientViT's head.in_conv is no candidate; a SegFormer's decode head neither). Eigen-CAM maps of the two
    must be equal (a mean-pooled EVA02 once got an MLP MatMul inside its last block: the block's residual Add,
    which reads the MLP on its second input, was not a token candidate)."""
    import warnings

    _, expected_layout, key = MATRIX[build]
    model, side = build()
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # through a wrapper: exporting EVA02 itself passes timm's keyword default is_causal as a tensor
        torch.onnx.export(Selected(model, key).eval(), (torch.zeros(1, 3, side, side),), str(path), dynamo=False,
                          opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    x = np.random.default_rng(0).normal(size=(2, 3, side, side)).astype(np.float32)
    target = None
    if build is Z.hf_segformer:
        mask = np.zeros((side // 4, side // 4), np.float32)
        mask[: side // 8] = 1
        target = SegmentationMask(1, mask)
    ours = Explainer.from_torch(model, progress=False).explain(x, "eigencam", target=target).heatmap
    onnx_ex = Explainer.from_onnx(path)
    assert str(onnx_ex.adapter.layer.lay) == expected_layout
    assert "picked automatically: the last main-path feature map before the head" in onnx_ex.describe()
    onnx_map = onnx_ex.explain(x, "eigencam", target=target).heatmap
    assert np.abs(ours - onnx_map).max() <= TOL
