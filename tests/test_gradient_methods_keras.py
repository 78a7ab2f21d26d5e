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


def test_fused_relus_follow_the_rule(torch):
    """Conv2D(activation="relu") and Dense(activation="relu") in Keras vs F.relu in a PyTorch twin:
    guided backprop and deconvnet agree, and differ from the vanilla gradient."""
    import keras
    from keras import layers
    from torch import nn

    keras.utils.set_random_seed(4)
    inp = keras.Input((12, 12, 3))
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(6, activation="relu", name="d1")(h)
    km = keras.Model(inp, layers.Dense(3, name="out")(h))
    for ly in km.layers:  # biases away from zero so that the ReLUs cut
        if getattr(ly, "bias", None) is not None:
            ly.bias.assign(np.random.default_rng(len(ly.name)).normal(0, 0.3, ly.bias.shape).astype(np.float32))

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1)
            self.d1, self.out = nn.Linear(8, 6), nn.Linear(6, 3)

        def forward(self, x):
            x = nn.functional.relu(self.c2(nn.functional.relu(self.c1(x))))
            return self.out(nn.functional.relu(self.d1(x.mean((2, 3)))))

    tm = Twin().eval()
    with torch.no_grad():
        for name in ("c1", "c2"):
            w, b = km.get_layer(name).get_weights()
            getattr(tm, name).weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1)))
            getattr(tm, name).bias.copy_(torch.from_numpy(b))
        for name in ("d1", "out"):
            w, b = km.get_layer(name).get_weights()
            getattr(tm, name).weight.copy_(torch.from_numpy(w.T))
            getattr(tm, name).bias.copy_(torch.from_numpy(b))
    x = np.random.default_rng(9).normal(size=(2, 3, 12, 12)).astype(np.float32)
    te = Explainer.from_torch(tm, "c2", progress=False)
    ke = Explainer.from_keras(km, "c2", progress=False)
    raws = {}
    for name in ("saliency", "guided_backprop", "deconvnet"):
        a = te.explain(x, name, target=[0, 2]).raw
        b = ke.explain(x.transpose(0, 2, 3, 1), name, target=[0, 2]).raw
        assert np.abs(a - b).max() <= RTOL * np.abs(a).max(), name
        raws[name] = a
    for name in ("guided_backprop", "deconvnet"):
        assert np.abs(raws[name] - raws["saliency"]).max() > 0.05 * np.abs(raws["saliency"]).max(), name
