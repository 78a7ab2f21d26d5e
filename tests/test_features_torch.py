"""Feature visualisation on PyTorch models: the demo model, and a single-channel toy network whose
deconvnet projection is computed by hand in NumPy."""
import numpy as np
import pytest

from agnostic_cam import Explainer


@pytest.fixture(scope="module")
def demo(torch):
    from agnostic_cam.demo.run import demo_images
    from agnostic_cam.demo.torch_model import load_demo_net

    model = load_demo_net()
    images, labels = demo_images(4)
    return model, images, labels, Explainer.from_torch(model, "features.relu3", input_shape=(3, 64, 64), progress=False)


def test_feature_maps_equal_the_frameworks_intermediate_output(torch, demo):
    model, images, _, ex = demo
    with torch.no_grad():
        ref3 = model.features(torch.from_numpy(images)).numpy()
        ref1 = model.features[:3](torch.from_numpy(images)).numpy()  # conv1, bn1, relu1
    fm = ex.feature_maps(images, top_k=6)
    order = np.argsort(-ref3.mean(axis=(0, 2, 3)), kind="stable")[:6]
    np.testing.assert_array_equal(fm.channels, order)
    np.testing.assert_allclose(fm.maps, ref3[:, order], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fm.means, ref3[:, order].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    fm1 = ex.feature_maps(images[:2], "features.relu1", channels=[3, 0, 7])
    np.testing.assert_allclose(fm1.maps, ref1[:2, [3, 0, 7]], rtol=1e-5, atol=1e-5)
    assert fm1.layer == "features.relu1" and len(fm1.figure().axes) >= 3


def test_filters_are_the_conv_weights(demo):
    model, _, _, ex = demo
    f = ex.filters("features.conv2")
    np.testing.assert_array_equal(f.weights, model.features.conv2.weight.detach().numpy())
    with pytest.raises(ValueError, match="convolution"):
        ex.filters("features.bn1")


def test_class_model_raises_the_target_far_above_start_and_other_classes(demo):
    *_, ex = demo
    k = 4
    res = ex.class_model(list(range(k)), seed=0)
    rows = np.arange(k)
    start, final = res.meta["start_scores"], res.meta["scores"]
    assert np.all(final[rows, rows] > start[rows, rows] + 5.0)
    others = np.where(np.eye(k, dtype=bool), -np.inf, final)
    assert np.all(final[rows, rows] > others.max(axis=1) + 3.0)  # each image is its class, clearly
    assert res.images.shape == (k, 3, 64, 64) and res.history.shape == (100, k)
    # history[t] is the score before step t; the last recorded score is close to the final one
    assert np.all(res.history[-1] > res.history[0] + 5.0)


def test_invert_reduces_the_representation_distance_by_a_large_factor(demo):
    _, images, _, ex = demo
    res = ex.invert(images[:1], "features.relu2", seed=0)
    assert res.meta["start_distance"] > 1.0
    assert res.meta["distance"] < res.meta["start_distance"] / 20
    # a reconstruction, not a copy of the input (it started from noise)
    assert np.abs(res.images - images[:1]).mean() > 0.01


def test_filter_maximisation_and_deep_dream_raise_their_objectives(demo):
    _, images, _, ex = demo
    fm = ex.filter_maximisation("features.relu2", [1, 3], seed=0)
    assert np.all(fm.history[-1] > 5 * fm.history[0] + 0.1)
    dd = ex.deep_dream(images[:1], "features.relu2", octaves=2, steps=10, clip=(0.0, 1.0))
    assert dd.images.shape == images[:1].shape and dd.history.shape == (20, 1)
    assert dd.history[-1, 0] > 2 * dd.history[10, 0]  # the full-size octave amplifies the layer
    assert dd.images.min() >= 0 and dd.images.max() <= 1


@pytest.mark.parametrize("name", ["class_model", "filter_maximisation", "deep_dream", "invert", "deconv"])
def test_results_are_identical_for_identical_seeds(demo, name):
    _, images, _, ex = demo
    runs = {
        "class_model": lambda s: ex.class_model([1, 2], seed=s, steps=15),
        "filter_maximisation": lambda s: ex.filter_maximisation("features.relu3", 5, seed=s, steps=15),
        "deep_dream": lambda s: ex.deep_dream(images[1:2], "features.relu2", seed=s, steps=8),
        "invert": lambda s: ex.invert(images[2:3], "features.relu1", seed=s, steps=15),
        "deconv": lambda s: ex.deconv_reconstruction(images[2:3], "features.relu2", top_k=3),
    }
    a, b, c = runs[name](3), runs[name](3), runs[name](4)
    assert np.array_equal(a.images, b.images)
    if name != "deconv":  # deterministic and seed-free
        assert not np.array_equal(a.images, c.images)


def test_progress_callback_and_bar(demo, capsys):
    *_, ex = demo
    seen = []
    ex.class_model(0, steps=12, callback=lambda i, x, v: seen.append((i, float(v[0]))) or i == 4)
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    ex.class_model(0, steps=3, progress=True)
    assert "class model" in capsys.readouterr().err


def test_errors_name_the_problem(demo):
    _, images, _, ex = demo
    with pytest.raises(ValueError, match="one image"):
        ex.deconv_reconstruction(images[:2])
    with pytest.raises(ValueError, match="64 channels"):
        ex.filter_maximisation(None, 64, steps=2)
    with pytest.raises(ValueError, match="out of range"):
        ex.class_model(9, steps=2)
    with pytest.raises(ValueError, match="closest names"):
        ex.feature_maps(images, "features.relu4")
    with pytest.raises(ValueError, match="top_k"):
        ex.feature_maps(images, top_k=0)
    with pytest.raises(TypeError, match="unknown option"):
        ex.invert(images[:1], lrr=0.1)
    with pytest.raises(ValueError, match="channels"):
        ex.feature_maps(images.transpose(0, 2, 3, 1))
    bare = Explainer.from_torch(ex.adapter.model, "features.relu3", progress=False)
    with pytest.raises(ValueError, match="shape="):
        bare.class_model(0, steps=2)
    assert bare.class_model(0, shape=(3, 32, 32), steps=2).images.shape == (1, 3, 32, 32)


def test_the_model_is_left_unchanged_also_on_error(torch, demo):
    model, images, _, ex = demo
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.features.conv1.weight.requires_grad_(False)
    try:
        ex.class_model(1, steps=3)
        ex.deep_dream(images[:1], "features.relu1", steps=2, octaves=2)
        with pytest.raises(ValueError):
            ex.filter_maximisation("features.relu1", 99, steps=2)
        assert model.training and all(m.training for m in model.modules())
        assert not model.features.conv1.weight.requires_grad and model.fc.weight.requires_grad
        assert all(p.grad is None for p in model.parameters())
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
    finally:
        model.eval()
        model.features.conv1.weight.requires_grad_(True)


# -- deconvnet on a toy network, by hand --------------------------------------------------------
def corr2d(x, w):
    """'same' cross-correlation of (H, W) with a 3x3 kernel, zero padding."""
    p = np.pad(x, 1)
    return np.array([[(p[i:i + 3, j:j + 3] * w).sum() for j in range(x.shape[1])] for i in range(x.shape[0])])


def test_deconv_reconstruction_matches_a_hand_computed_projection(torch):
    """conv1 -> ReLU -> maxpool 2 -> conv2 -> ReLU, one channel each. The deconvnet projection of
    the strongest activation A[i, j] at relu2: ReLU(A) -> conv2 transposed -> unpool through the
    max switches -> ReLU -> conv1 transposed, written out with loops."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(1, 1, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("pool", nn.MaxPool2d(2))
    net.add_module("conv2", nn.Conv2d(1, 1, 3, padding=1))
    net.add_module("relu2", nn.ReLU())
    net.add_module("gap", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    w1 = np.array([[0.5, -1.0, 0.3], [0.8, 1.2, -0.4], [-0.6, 0.2, 0.9]], np.float32)
    w2 = np.array([[-0.7, 0.4, 1.0], [0.6, -1.1, 0.5], [0.3, 0.8, -0.9]], np.float32)
    with torch.no_grad():
        net.conv1.weight.copy_(torch.from_numpy(w1)[None, None])
        net.conv1.bias.fill_(0.05)
        net.conv2.weight.copy_(torch.from_numpy(w2)[None, None])
        net.conv2.bias.fill_(-0.1)
    x = np.random.default_rng(2).normal(size=(1, 1, 8, 8)).astype(np.float32)

    # forward by hand
    z1 = corr2d(x[0, 0], w1) + 0.05
    a1 = np.maximum(z1, 0)
    pooled = np.zeros((4, 4))
    switch = {}
    for u in range(4):
        for v in range(4):
            win = a1[2 * u:2 * u + 2, 2 * v:2 * v + 2]
            k = int(np.argmax(win))
            switch[u, v] = (2 * u + k // 2, 2 * v + k % 2)
            pooled[u, v] = win.max()
    a2 = np.maximum(corr2d(pooled, w2) - 0.1, 0)
    i, j = np.unravel_index(np.argmax(a2), a2.shape)

    # backward by hand, deconvnet rule: ReLU on the backward signal
    g2 = np.zeros((4, 4))
    g2[i, j] = max(a2[i, j], 0)
    gp = np.zeros((6, 6))  # padded
    for ii in range(4):
        for jj in range(4):
            gp[ii:ii + 3, jj:jj + 3] += g2[ii, jj] * w2
    gp = gp[1:5, 1:5]
    ga1 = np.zeros((8, 8))
    for (u, v), (r, c) in switch.items():
        ga1[r, c] += gp[u, v]
    gz1 = np.maximum(ga1, 0)
    gx = np.zeros((10, 10))
    for r in range(8):
        for c in range(8):
            gx[r:r + 3, c:c + 3] += gz1[r, c] * w1
    expected = gx[1:9, 1:9]
    assert (ga1 < 0).any()  # the deconv ReLU really removes something here

    ex = Explainer.from_torch(net, "relu2", progress=False)
    res = ex.deconv_reconstruction(x, top_k=1)
    assert res.meta["channels"].tolist() == [0] and res.meta["positions"].tolist() == [[i, j]]
    np.testing.assert_allclose(res.meta["values"], [a2[i, j]], rtol=1e-5)
    np.testing.assert_allclose(res.images[0, 0], expected, rtol=1e-4, atol=1e-5)
    vanilla = ex.deconv_reconstruction(x, top_k=1, rule="vanilla").images[0, 0]
    assert np.abs(vanilla - expected).max() > 1e-2  # a different rule gives a different answer
    assert res.title == "layer relu2, top 1 filters"


def test_non_spatial_layer_is_refused_for_feature_maps(demo):
    _, images, _, ex = demo
    with pytest.raises(ValueError, match="not a spatial map"):
        ex.feature_maps(images, "fc")


def test_demo_section_writes_its_figures(tmp_path, torch, monkeypatch):
    from agnostic_cam.demo.run import run_demo
    import importlib

    for name in ("class_model", "deep_dream", "filter_max", "invert"):  # the figures are tested here, not the optimisation
        monkeypatch.setitem(importlib.import_module(f"agnostic_cam.features.{name}").DEFAULTS, "steps", 3)
    index = run_demo(tmp_path, n_images=2, sections=["features"])
    page = index.read_text()
    assert "Feature visualisation" in page and "Deconvnet" in page
    for name in ("features_maps_relu1", "features_filters_conv1", "features_deconv_relu2", "features_class_models",
                 "features_filter_max_relu3", "features_deep_dream", "features_inversion"):
        assert (tmp_path / f"{name}.png").stat().st_size > 2000, name
        assert f"{name}.png" in page


def test_deconv_chosen_channels_and_ranking(torch, demo):
    model, images, _, ex = demo
    with torch.no_grad():
        a = model.features[:7](torch.from_numpy(images[:1])).numpy()[0]  # up to relu2
    res = ex.deconv_reconstruction(images[:1], "features.relu2", top_k=4)
    flat = a.reshape(a.shape[0], -1)
    np.testing.assert_array_equal(res.meta["channels"], np.argsort(-flat.max(axis=1), kind="stable")[:4])
    np.testing.assert_allclose(res.meta["values"], np.sort(flat.max(axis=1))[::-1][:4], rtol=1e-5)
    chosen = ex.deconv_reconstruction(images[:1], "features.relu2", channels=[3, 7])
    assert chosen.meta["channels"].tolist() == [3, 7] and chosen.images.shape == (2, 3, 64, 64)
    pos = chosen.meta["positions"]
    w = a.shape[2]
    assert [int(p[0] * w + p[1]) for p in pos] == flat[[3, 7]].argmax(axis=1).tolist()
    assert "filters [3, 7]" in chosen.title
