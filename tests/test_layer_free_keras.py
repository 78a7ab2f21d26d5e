"""Layer-free methods and task targets on Keras models (NHWC): occlusion against occluded images
scored by the Keras model itself, a model without a spatial layer, and Similarity through TF autograd.
Reduced: 16 px inputs, a two-layer model."""
import numpy as np
import pytest

import torch  # noqa: F401 - torch before tensorflow in one process (see the developers' guide)

keras = pytest.importorskip("keras")

from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.errors import ModelError  # noqa: E402
from agnostic_cam.targets import Similarity  # noqa: E402


def small(conv: bool = True):
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inp) if conv else inp
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(h))


def test_keras_occlusion_by_hand_and_without_a_layer():
    model = small()
    x = np.random.default_rng(0).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    ex = Explainer.from_keras(model, progress=False)
    got = ex.explain(x, "occlusion", target=2, window=8, stride=8, baseline=0.0).raw[0]
    y = model.predict(x, verbose=0)[0, 2]
    for r in (0, 8):
        for c in (0, 8):
            occ = x.copy()
            occ[0, r:r + 8, c:c + 8] = 0
            np.testing.assert_allclose(got[r:r + 8, c:c + 8], y - model.predict(occ, verbose=0)[0, 2], rtol=1e-4, atol=1e-5)
    flat = Explainer.from_keras(small(conv=False), progress=False)
    assert flat.layer is None
    assert flat.explain(x, "rise", target=0, masks=32, cells=4).raw.shape == (1, 16, 16)
    with pytest.raises(ModelError, match="target_layer="):
        flat.explain(x, "gradcam", target=0)


def test_keras_similarity_target_through_tf_autograd():
    model = small()
    x = np.random.default_rng(1).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    e = np.array([1.0, -2.0, 0.5, 3.0])
    out = model.predict(x, verbose=0)
    want = out @ e / np.linalg.norm(out, axis=1) / np.linalg.norm(e)
    ex = Explainer.from_keras(model, "conv", progress=False)
    g = ex.explain(x, "gradcam", target=Similarity(e))
    r = ex.explain(x, "rise", target=Similarity(e), masks=32, cells=4)
    np.testing.assert_allclose(g.scores, want, rtol=1e-4)
    np.testing.assert_allclose(r.scores, want, rtol=1e-4)
