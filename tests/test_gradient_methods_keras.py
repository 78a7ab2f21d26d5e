"""The pixel-space methods on the Keras twin of the demo model (same weights, NHWC) match the
PyTorch demo model: raw attributions (both channel-first) and heatmaps to <= 1e-3."""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (importing torchvision after TF segfaults here)

from agnostic_cam import Explainer

RTOL = 1e-3
CASES = [("saliency", {}), ("guided_backprop", {}), ("deconvnet", {}), ("gradient_x_input", {}),
         ("integrated_gradients", {"steps": 12}), ("smoothgrad", {"base": "guided_backprop", "samples": 4}),
         ("guided_gradcam", {}), ("guided_gradcam++", {}), ("guided_layercam", {}), ("guided_scorecam", {})]


@pytest.fixture(scope="module")
def twins(demo_model):
    from agnostic_cam.demo.keras_model import TARGET_LAYER as K_LAYER
    from agnostic_cam.demo.keras_model import keras_twin
    from agnostic_cam.demo.run import demo_images
    from agnostic_cam.demo.torch_model import TARGET_LAYER

    x, _ = demo_images(3)
    t = Explainer.from_torch(demo_model, TARGET_LAYER, progress=False)
    k = Explainer.from_keras(keras_twin(demo_model), K_LAYER, progress=False)
    return t, k, x


@pytest.mark.parametrize("name, opts", CASES, ids=[c[0] for c in CASES])
def test_keras_twin_matches_torch(twins, name, opts):
    t, k, x = twins
    a = t.explain(x, name, target=[0, 1, 2], **opts)
    b = k.explain(x.transpose(0, 2, 3, 1), name, target=[0, 1, 2], **opts)
    assert b.raw.shape == a.raw.shape == x.shape  # channel-first for both layouts
    err = np.abs(a.raw - b.raw).max() / np.abs(a.raw).max()
    assert err <= RTOL, f"{name}: relative error {err:.2e}"
    np.testing.assert_allclose(b.heatmap, a.heatmap, atol=RTOL)
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-4, atol=1e-4)
