"""Eigen-CAM's sign where the channel mean is flat (methods/projection.py, FLAT).

After a LayerNorm with its initial weights (weight 1, bias 0: every timm / torchvision ViT built with
random weights) every token's channels average to exactly 0, so the channel-mean map that decides
Eigen-CAM's sign is float rounding, and the PyTorch and ONNX Runtime activations (equal to 1e-6)
could give opposite maps (a heatmap difference of 1.0). The rule falls back to "largest magnitude
positive" there.
"""
import numpy as np
import pytest

from agnostic_cam.methods.projection import first_component_projection


def _layernormed(rng, c=64, h=5, w=5):
    a = rng.normal(size=(c, h, w)) * np.linspace(0.5, 2.0, c)[:, None, None]
    a += rng.normal(size=(1, h, w)) * 3.0            # a spatial pattern shared by the channels
    a = (a - a.mean(axis=0)) / a.std(axis=0)          # LayerNorm over channels, weight 1, bias 0
    return a.astype(np.float32)


def test_flat_channel_mean_sign_does_not_follow_rounding():
    rng = np.random.default_rng(0)
    for k in range(5):
        a = _layernormed(rng)
        maps, old_signs = [], set()
        for s in range(12):  # float32 rounding-sized changes, as between PyTorch and ONNX Runtime
            noisy = (a * (1 + 1e-7 * np.random.default_rng(s).standard_normal(a.shape))).astype(np.float32)
            maps.append(first_component_projection(noisy[None])[0])
            m = noisy.astype(np.float64).reshape(a.shape[0], -1).T
            m = m - m.mean(axis=0)
            p = m @ np.linalg.svd(m, full_matrices=False)[2][0]
            old_signs.add(bool(np.dot(p, noisy.mean(axis=0).reshape(-1)) < 0))  # the rule alone, before FLAT
        for mp in maps[1:]:
            np.testing.assert_allclose(mp, maps[0], atol=1e-4)
        assert maps[0].max() >= -maps[0].min()        # the largest magnitude is positive
        if k == 0:
            assert len(old_signs) == 2, "the channel-mean rule alone is decided by rounding here"


def test_decisive_channel_mean_keeps_the_mean_rule():
    """Post-ReLU activations (a CNN): the map correlates positively with the channel mean, as before."""
    rng = np.random.default_rng(1)
    a = np.maximum(rng.normal(size=(2, 32, 6, 6)) + np.linspace(-1, 1, 36).reshape(1, 1, 6, 6), 0).astype(np.float32)
    out = first_component_projection(a)
    for i in range(2):
        mean = a[i].mean(axis=0).reshape(-1)
        assert np.dot(out[i].reshape(-1), mean - mean.mean()) > 0


def test_default_init_vit_torch_and_onnx_agree(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torchvision.models.vision_transformer import VisionTransformer

    from agnostic_cam import Explainer

    torch.manual_seed(3)
    model = VisionTransformer(image_size=48, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()  # LayerNorms at their initial weights
    path = tmp_path / "vit.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 48, 48),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "n"}})
    x = np.random.default_rng(0).normal(size=(4, 3, 48, 48)).astype(np.float32)
    a = Explainer.from_torch(model, "encoder.layers.encoder_layer_1.ln_1", input_shape=(3, 48, 48), progress=False)
    b = Explainer.from_onnx(str(path), target_layer="/encoder/layers/encoder_layer_1/ln_1/LayerNormalization",
                            progress=False)
    ha, hb = a.explain(x, "eigencam").heatmap, b.explain(x, "eigencam").heatmap
    assert np.abs(ha - hb).max() <= 1e-4
