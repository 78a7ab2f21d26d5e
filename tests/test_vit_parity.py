"""Token and channels-last layers against pytorch-grad-cam with its ``reshape_transform``.

Models (random seeded weights, nothing downloaded), reduced so the suite stays fast:
- torchvision ``vit_b_16`` at 48 px (3x3 patch grid + class token), layer
  ``encoder.layers.encoder_layer_11.ln_1``: every gradient method. Score-CAM and Ablation-CAM run
  one full forward (or tail) per channel, 768 here, and Eigen-CAM needs the ONNX export of 86M
  weights: these three run on the same torchvision ``VisionTransformer`` class with hidden_dim 32
  and 2 layers instead.
- torchvision ``swin_t`` at 96 px (one image), layer ``features`` ((N, h, w, C), channels-last):
  gradient methods; Score-/Ablation-/Eigen-CAM on the same ``SwinTransformer`` class with
  embed_dim 8 (64 channels at ``features``).
- timm ``VisionTransformer`` (test-only reference) with 4 register tokens besides the class token
  (5 prefix tokens), 32 px, patch 8, embed_dim 24, depth 2, layer ``blocks.1.norm1``: every method.
Ablation-CAM: pytorch-grad-cam's ``AblationLayerVit`` ablates a channel on every token, class token
included; on signed layers it writes ``min - 1e7`` instead of the paper's 0, so the reference
here is ``AblationLayerVit`` with the paper's value 0 (our default).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pgc = pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam.ablation_layer import AblationLayerVit  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from agnostic_cam import Explainer  # noqa: E402
from vit_helpers import randomise_norms  # noqa: E402
from agnostic_cam.errors import LayoutError  # noqa: E402
from agnostic_cam.core.layout import LayerLayout  # noqa: E402

GRADIENT = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]
FORWARD = ["scorecam", "ablationcam", "eigencam"]
CLASSES = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
           "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM, "scorecam": pgc.ScoreCAM,
           "ablationcam": pgc.AblationCAM, "eigencam": pgc.EigenCAM}
TOL = 1e-4


class ZeroAblationVit(AblationLayerVit):
    """AblationLayerVit with the paper's ablation value 0 on every layer (see the module docstring)."""

    def __call__(self, x):
        out = self.activations.transpose(1, self.activations.ndim - 1)
        for i in range(out.size(0)):
            out[i, self.indices[i], :] = 0
        return out.transpose(self.activations.ndim - 1, 1)


def tokens_to_chw(prefix, h, w):
    def reshape_transform(t):  # pytorch-grad-cam's ViT recipe
        r = t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2))
        return r.transpose(2, 3).transpose(1, 2)
    return reshape_transform


def nhwc_to_chw(t):  # pytorch-grad-cam's Swin recipe
    return t.permute(0, 3, 1, 2)


def reference(name, model, layer, x, targets, reshape):
    kw = {"ablation_layer": ZeroAblationVit()} if name == "ablationcam" else {}
    with CLASSES[name](model=model, target_layers=[layer], reshape_transform=reshape, **kw) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 64
        return cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(int(t)) for t in targets])


def compare(model, layer_name, x, methods, reshape, expect_layout):
    layer = dict(model.named_modules())[layer_name]
    # no input_shape: from_torch(..., input_shape=) exports the model at once (the fallback check), and the
    # gradient methods never need that export (86M weights on vit_b_16); the layout is read at the first call
    ex = Explainer.from_torch(model, layer_name, progress=False)
    targets = np.arange(x.shape[0]) % 5
    for name in methods:
        ours = ex.explain(x, method=name, target=targets).heatmap
        ref = reference(name, model, layer, x, targets, reshape)
        diff = np.abs(ours - ref).max()
        if name == "eigencam":  # the sign of a principal component is arbitrary: compare up to sign, per image
            diff = eigen_diff_up_to_sign(model, layer, x, ours, reshape)
        assert diff <= TOL, f"{name} at {layer_name}: max abs diff {diff}"
        assert ours.std() > 0, f"{name}: flat map"
        assert str(ex.adapter.layer_layout) == expect_layout
    return ex


def eigen_diff_up_to_sign(model, layer, x, ours, reshape):
    """Eigen-CAM against an independent SVD (tests/independent.py) of the layer's tokens, read by a
    forward hook and put on their grid by the test's own reshape; the better sign per image."""
    from independent import eigen_diff_up_to_sign as diff

    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        handle.remove()
    return diff((reshape(seen[0]) if reshape is not None else seen[0]).double().numpy(), ours)


def images(n, size, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def test_vit_b_16_tokens_gradient_methods():
    torch.manual_seed(0)
    model = randomise_norms(torchvision.models.vit_b_16(weights=None, image_size=48).eval())
    compare(model, "encoder.layers.encoder_layer_11.ln_1", images(2, 48), GRADIENT,
            tokens_to_chw(1, 3, 3), "tokens(prefix=1, grid=3x3)")


def test_torchvision_vit_tokens_forward_methods_reduced_width():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = randomise_norms(VisionTransformer(image_size=48, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32,
                                              mlp_dim=64, num_classes=10).eval())
    compare(model, "encoder.layers.encoder_layer_1.ln_1", images(2, 48), FORWARD, tokens_to_chw(1, 3, 3),
            "tokens(prefix=1, grid=3x3)")


def test_swin_t_channels_last_gradient_methods():
    torch.manual_seed(0)
    model = randomise_norms(torchvision.models.swin_t(weights=None).eval())
    compare(model, "features", images(1, 96), GRADIENT, nhwc_to_chw, "NHWC")


def test_swin_channels_last_forward_methods_reduced_width():
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2],
                            window_size=[4, 4], num_classes=10).eval()
    randomise_norms(model)
    compare(model, "features", images(2, 64), FORWARD, nhwc_to_chw, "NHWC")


def test_timm_vit_with_register_tokens_every_method():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=2, reg_tokens=4, num_classes=10).eval()
    randomise_norms(model)
    ex = compare(model, "blocks.1.norm1", images(2, 32), GRADIENT + FORWARD, tokens_to_chw(5, 4, 4),
                 "tokens(prefix=5, grid=4x4)")
    listed = {c.name: c for c in ex.layers()}
    assert listed["blocks.1.norm1"].layout == "tokens(prefix=5, grid=4x4)"
    assert not any(".attn." in n for n in listed), "per-head attention tensors must not be offered as CAM layers"


def test_reshape_callable_is_exported_and_matches_layer_layout():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = randomise_norms(VisionTransformer(image_size=48, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32,
                                              mlp_dim=64, num_classes=10).eval())
    x = images(2, 48)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    a = Explainer.from_torch(model, layer, input_shape=(3, 48, 48), reshape=tokens_to_chw(1, 3, 3))
    b = Explainer.from_torch(model, layer, input_shape=(3, 48, 48), layer_layout="tokens")
    graph_ops = {n.op_type for n in a.adapter.engine((3, 48, 48)).model.graph.node}
    assert "Slice" in graph_ops or "Gather" in graph_ops  # the reshape is part of the exported graph
    for m in ("gradcam", "eigencam", "scorecam", "ablationcam"):
        np.testing.assert_allclose(a.explain(x, m, target=3).heatmap, b.explain(x, m, target=3).heatmap, atol=1e-6)


def test_ambiguous_layout_raises_instead_of_guessing():
    # a custom module whose output (N, 8, 8, 8) reads as (N, C, h, w) or (N, h, w, C) at 64 px
    class Mix(torch.nn.Module):
        def forward(self, y):
            return torch.sin(y.permute(0, 2, 3, 1))  # functional ops: nothing tells the layout

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 8, stride=8)
            self.mix = Mix()
            self.head = torch.nn.Linear(8 * 8 * 8, 4)

        def forward(self, x):
            return self.head(self.mix(self.stem(x)).flatten(1))

    torch.manual_seed(0)
    model = Net().eval()
    with pytest.raises(LayoutError, match="layer_layout="):
        Explainer.from_torch(model, "mix", input_shape=(3, 64, 64))
    ex = Explainer.from_torch(model, "mix", input_shape=(3, 64, 64), layer_layout="NHWC")
    assert ex.adapter.layer_layout == LayerLayout("NHWC")
    assert ex.explain(images(1, 64), "gradcam", target=0).heatmap.shape == (1, 64, 64)
