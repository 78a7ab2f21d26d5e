"""Feature visualisation on Keras: the demo model's Keras twin (same weights, NHWC) gives the same
feature maps and deconvnet reconstructions as the PyTorch demo model, and the optimisation-based
techniques work on a model with a fixed input size."""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (torchvision after TF segfaults here)

from agnostic_cam import Explainer


@pytest.fixture(scope="module")
def twins(torch):  # the session fixture: torch's threads set once for the process
    from agnostic_cam.demo.keras_model import keras_twin
    from agnostic_cam.demo.run import demo_images
    from agnostic_cam.demo.torch_model import load_demo_net

    tm = load_demo_net()
    images, _ = demo_images(3)
    ext = Explainer.from_torch(tm, "features.relu3", input_shape=(3, 64, 64), progress=False)
    exk = Explainer.from_keras(keras_twin(tm), "relu3", progress=False)
    return ext, exk, images, images.transpose(0, 2, 3, 1).copy()


@pytest.mark.parametrize("i", [1, 2, 3])
def test_feature_maps_match_the_torch_twin(twins, i):
    ext, exk, x, xk = twins
    ft = ext.feature_maps(x, f"features.relu{i}", top_k=8)
    fk = exk.feature_maps(xk, f"relu{i}", top_k=8)
    np.testing.assert_array_equal(fk.channels, ft.channels)
    assert np.abs(fk.maps - ft.maps).max() <= 1e-4
    all_t = ext.feature_maps(x, f"features.relu{i}", channels=list(range(16)))
    all_k = exk.feature_maps(xk, f"relu{i}", channels=list(range(16)))
    assert np.abs(all_k.maps - all_t.maps).max() <= 1e-4


def test_feature_maps_equal_keras_intermediate_output(twins):
    import keras

    _, exk, _, xk = twins
    model = exk.adapter.model
    sub = keras.Model(model.inputs[0], model.get_layer("relu2").output)
    ref = np.asarray(sub(xk)).transpose(0, 3, 1, 2)
    got = exk.feature_maps(xk, "relu2", channels=list(range(32)))
    np.testing.assert_allclose(got.maps, ref, atol=1e-5)


@pytest.mark.parametrize("i", [2, 3])
def test_deconv_reconstructions_match_the_torch_twin(twins, i):
    ext, exk, x, xk = twins
    rt = ext.deconv_reconstruction(x[1:2], f"features.relu{i}", top_k=5)
    rk = exk.deconv_reconstruction(xk[1:2], f"relu{i}", top_k=5)
    np.testing.assert_array_equal(rk.meta["channels"], rt.meta["channels"])
    np.testing.assert_array_equal(rk.meta["positions"], rt.meta["positions"])
    assert rk.images.shape == (5, 64, 64, 3)
    assert np.abs(rk.images.transpose(0, 3, 1, 2) - rt.images).max() <= 1e-3
    assert np.abs(rt.images).max() > 1e-2  # not trivially zero


def test_filters_match(twins):
    ext, exk, _, _ = twins
    np.testing.assert_allclose(exk.filters("conv1").weights, ext.filters("features.conv1").weights, atol=0)


def test_optimisation_on_a_fixed_size_keras_model(twins):
    ext, exk, x, xk = twins
    cm = exk.class_model([0, 3], steps=40, seed=1)  # input size read from the model
    rows = np.arange(2)
    t = np.array([0, 3])
    assert cm.images.shape == (2, 64, 64, 3)
    assert np.all(cm.meta["scores"][rows, t] > cm.meta["start_scores"][rows, t] + 5)
    inv = exk.invert(xk[:1], "relu2", steps=60)
    assert inv.meta["distance"] < inv.meta["start_distance"] / 5
    dd = exk.deep_dream(xk[:1], "relu2", octaves=2, steps=5)  # smaller octave resized to 64 x 64
    assert dd.images.shape == (1, 64, 64, 3) and dd.meta["sizes"][0] != (64, 64)
    assert dd.history[-1, 0] > dd.history[5, 0]
    # same weights, same seed: the twins' optimised images agree
    ct = ext.class_model([0, 3], steps=5, seed=1)
    ck = exk.class_model([0, 3], steps=5, seed=1)
    assert np.abs(ck.images.transpose(0, 3, 1, 2) - ct.images).max() < 1e-3


def test_keras_model_weights_unchanged(twins):
    _, exk, _, xk = twins
    model = exk.adapter.model
    before = [w.copy() for w in model.get_weights()]
    exk.filter_maximisation("relu2", 1, steps=3)
    exk.deconv_reconstruction(xk[:1], "relu3", top_k=2)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
