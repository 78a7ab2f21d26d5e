"""Feature tools at channels-last and token layers of PyTorch models read channels where they are.

Before: ``feature_maps`` at a Swin stage ((N, h, w, C)) ranked the h axis as channels and returned
(N, k, w, C) maps, silently; ``deconv_reconstruction`` and ``filter_maximisation`` picked rows of the
wrong axis the same way. The PyTorch adapter now views such tensors as (N, C, h, w) through the
layer's layout (detected, or the target layer's own), differentiably, as the ONNX adapter does.
Reduced for time: torchvision's SwinTransformer / VisionTransformer classes, tiny, random weights.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from agnostic_cam import Explainer  # noqa: E402


@pytest.fixture(scope="module")
def swin():
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=10).eval()


def _native(model, layer, x):
    out = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.update(a=o.detach().clone()))
    with torch.no_grad():
        model(torch.from_numpy(x))
    h.remove()
    return out["a"].numpy()


def test_channels_last_feature_maps_torch_and_onnx(swin, tmp_path):
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    # no input_shape: the layout is resolved at the first call (before that was fixed, feature_maps and
    # deconv_reconstruction read the (N, h, w, C) target tensor as (N, C, h, w) until an explain resolved it)
    ex = Explainer.from_torch(swin, "features", progress=False)
    chw = _native(swin, "features", x).transpose(0, 3, 1, 2)                    # (N, h, w, C) -> (N, C, h, w)
    fm = ex.feature_maps(x, top_k=4)
    order = np.argsort(-chw.mean(axis=(0, 2, 3), dtype=np.float64), kind="stable")[:4]
    np.testing.assert_array_equal(fm.channels, order)
    np.testing.assert_allclose(fm.maps, chw[:, order], atol=1e-6)
    # an inner stage, not the target layer: its layout is detected (channels-last, after a LayerNorm)
    inner = _native(swin, "features.0", x).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(ex.feature_maps(x, layer="features.0", channels=[0, 5]).maps, inner[:, [0, 5]],
                               atol=1e-6)
    path = tmp_path / "swin.onnx"
    torch.onnx.export(swin, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "n"}})
    onnx_ex = Explainer.from_onnx(str(path), progress=False)
    # the ONNX listing holds the same (N, 8, 8, 16) tensor among its channels-last candidates (a stage's
    # LayerNorm outputs have that shape too); its feature maps are the same numbers
    same = [ly.name for ly in onnx_ex.layers() if str(ly.layout) == "NHWC" and tuple(ly.shape[1:]) == (8, 8, 16)
            and np.abs(onnx_ex.feature_maps(x, layer=ly.name, channels=order).maps - fm.maps).max() <= 1e-4]
    assert len(same) == 1, same


def test_token_layer_feature_maps(tmp_path):
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(1)
    vit = VisionTransformer(image_size=48, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                            num_classes=10).eval()
    x = np.random.default_rng(1).random((2, 3, 48, 48), dtype=np.float32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    ex = Explainer.from_torch(vit, layer, input_shape=(3, 48, 48), progress=False)
    tokens = _native(vit, layer, x)                                              # (N, 1 + 3*3, 32)
    grid = tokens[:, 1:].reshape(2, 3, 3, 32).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(ex.feature_maps(x, channels=[3, 30]).maps, grid[:, [3, 30]], atol=1e-6)


def test_deconv_reconstruction_at_a_channels_last_layer_is_the_gradient_of_that_activation(swin):
    """Each reconstruction (rule 'vanilla': Swin has no ReLU) is A[0, i, j, c] * d A[0, i, j, c] / dx of
    the native (N, h, w, C) tensor at the channel and position the tool reports."""
    x = np.random.default_rng(2).random((1, 3, 64, 64), dtype=np.float32)
    ex = Explainer.from_torch(swin, "features", progress=False)  # layout found at the first call, no export
    vis = ex.deconv_reconstruction(x, top_k=2, rule="vanilla")
    chw = _native(swin, "features", x).transpose(0, 3, 1, 2)[0]
    for k, (c, (i, j)) in enumerate(zip(vis.meta["channels"], vis.meta["positions"])):
        assert chw[c, i, j] == pytest.approx(chw[c].max(), rel=1e-6)              # the strongest position of c
        xt = torch.from_numpy(x).requires_grad_(True)
        out = {}
        h = swin.features.register_forward_hook(lambda m, inp, o: out.update(a=o))
        swin(xt)
        h.remove()
        (g,) = torch.autograd.grad(out["a"][0, i, j, c], xt)
        # the tool's cotangent is the activation's own value at that place (Zeiler & Fergus keep it)
        np.testing.assert_allclose(vis.images[k], chw[c, i, j] * g[0].numpy(), rtol=1e-4, atol=1e-6)
