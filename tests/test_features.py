"""agnostic_cam.features in NumPy: regularisers against references (scipy, finite differences),
the ascent loop against objectives whose optimum is known, channel ranking, cotangents, figures.
No framework: a linear NumPy "model" stands in for the adapter where one is needed."""
import numpy as np
import pytest

from agnostic_cam.features.class_model import class_model, one_hot_rows
from agnostic_cam.features.deconv import keep_one, strongest
from agnostic_cam.features.filter_max import channel_mean_cotangent
from agnostic_cam.features.maps import rank_channels
from agnostic_cam.features.optimise import Ascent, ascend, split_options
from agnostic_cam.features.regularise import (gaussian_blur, jitter, spatial_axes, total_variation,
                                              total_variation_grad)
from agnostic_cam.features.result import FeatureMaps, Filters, Visualisation


class LinearAdapter:
    """out = x.reshape(N, -1) @ W.T: a 'model' whose class models have a closed form."""

    layout = "NHWC"
    channels = 3
    spatial = (6, 5)

    def __init__(self, k: int = 4, seed: int = 0):
        self.w = np.random.default_rng(seed).normal(size=(k, 6 * 5 * 3)).astype(np.float32)
        self.calls = 0

    def prepare(self, x):
        return np.asarray(x, np.float32)

    def vjp(self, x, layer, cotangent, rule="vanilla"):
        assert layer is None and rule == "vanilla"
        self.calls += 1
        out = x.reshape(x.shape[0], -1) @ self.w.T
        cot = cotangent(out)
        return out, (cot @ self.w).reshape(x.shape)


# -- regularisers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.7])
def test_gaussian_blur_matches_scipy(layout, sigma, rng):
    from scipy.ndimage import gaussian_filter

    x = rng.normal(size=(2, 3, 9, 11) if layout == "NCHW" else (2, 9, 11, 3))
    axes = spatial_axes(layout)
    sig = [0.0] * 4
    for a in axes:
        sig[a] = sigma
    ref = gaussian_filter(x, sigma=sig, mode="reflect", truncate=3.0)
    got = gaussian_blur(x, sigma, axes)
    np.testing.assert_allclose(got, ref, atol=1e-10)
    np.testing.assert_allclose(got.sum(axis=axes).mean(), x.sum(axis=axes).mean(), rtol=0.2)  # mass roughly kept
    assert np.array_equal(gaussian_blur(x, 0.0, axes), x)


def test_jitter_is_a_circular_shift_and_inverts(rng):
    x = rng.normal(size=(1, 2, 5, 6))
    y = jitter(x, 2, -1, (2, 3))
    assert y[0, 1, 2, 0] == x[0, 1, 0, 1]
    np.testing.assert_array_equal(jitter(y, -2, 1, (2, 3)), x)


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_total_variation_gradient_matches_finite_differences(beta, layout, rng):
    x = rng.normal(size=(2, 2, 5, 4) if layout == "NCHW" else (2, 5, 4, 2))
    axes = spatial_axes(layout)
    g = total_variation_grad(x, axes, beta)
    num = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        num[idx] = (total_variation(x + e, axes, beta) - total_variation(x - e, axes, beta))[idx[0]] / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-6)


def test_total_variation_value_by_hand():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0  # one bright pixel: 4 unit differences touch it
    # (i,j)=(0,1): dh=1 ; (1,0): dw=1 ; (1,1): dh=-1, dw=-1 -> sqrt(2)^2 = 2 for beta=2
    np.testing.assert_allclose(total_variation(x, (2, 3), 2.0), [1 + 1 + 2], atol=1e-6)
    np.testing.assert_allclose(total_variation(np.ones((1, 1, 4, 4)), (2, 3), 1.0), [16 * 1e-4], rtol=1e-6)


# -- the ascent loop -----------------------------------------------------------------------------
def quadratic(t):
    def grad_fn(x):
        return -0.5 * ((x - t) ** 2).reshape(x.shape[0], -1).sum(1), t - x
    return grad_fn


@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_ascent_sgd_reaches_the_known_optimum(l2, rng):
    """max -0.5||x - t||^2 - l2/2 ||x||^2 has its optimum at t / (1 + l2)."""
    t = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    s = Ascent(steps=60, lr=0.5, l2=l2, optimizer="sgd", schedule="constant")
    x, hist = ascend(np.zeros_like(t), quadratic(t), s, "NCHW")
    np.testing.assert_allclose(x, t / (1 + l2), atol=1e-5)
    assert hist.shape == (60, 2) and np.all(np.diff(hist, axis=0) >= -1e-9)


def test_ascent_adam_with_tv_is_stationary(rng):
    """With TV the optimum has no closed form; at convergence the total gradient vanishes."""
    t = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
    s = Ascent(steps=800, lr=0.05, tv=0.1, optimizer="adam")
    x, _ = ascend(np.zeros_like(t), quadratic(t), s, "NHWC")
    total = (t - x) - 0.1 * total_variation_grad(x.astype(np.float64), (1, 2))
    assert np.abs(total).max() < 2e-3
    assert total_variation(x, (1, 2)) < total_variation(t, (1, 2))  # smoother than the target


def test_ascent_jitter_undone_for_a_shift_invariant_objective(rng):
    """Jitter shifts the image and shifts the gradient back: for a per-channel-constant target
    the objective is shift invariant, so the path is the same as without jitter."""
    t = np.broadcast_to(rng.normal(size=(1, 3, 1, 1)), (1, 3, 6, 6)).astype(np.float32)
    x0 = rng.normal(size=t.shape).astype(np.float32)
    seen: dict[int, list] = {0: [], 2: []}

    def fn(j):
        def f(x):
            seen[j].append(x.copy())
            return quadratic(t)(x)
        return f

    a, _ = ascend(x0, fn(0), Ascent(steps=20, lr=0.3, optimizer="sgd", schedule="constant"), "NCHW")
    b, _ = ascend(x0, fn(2), Ascent(steps=20, lr=0.3, jitter=2, optimizer="sgd", schedule="constant"), "NCHW", seed=1)
    np.testing.assert_allclose(a, b, atol=1e-5)
    shifted = sum(not np.allclose(u, v) for u, v in zip(seen[0], seen[2]))
    assert shifted >= 10  # the evaluations really saw shifted images


def test_ascent_clip_blur_callback_and_seed(rng):
    t = rng.normal(size=(1, 3, 8, 8)).astype(np.float32) * 3
    calls = []
    s = Ascent(steps=30, lr=0.1, jitter=1, blur_sigma=0.7, blur_every=3, clip=(-1.0, 1.0))
    x1, h1 = ascend(np.zeros_like(t), quadratic(t), s, "NCHW", seed=5,
                    callback=lambda i, x, v: calls.append(i) or i == 9)
    assert calls == list(range(10)) and h1.shape == (10, 1)  # True from the callback stops the loop
    assert x1.min() >= -1 and x1.max() <= 1
    x2, _ = ascend(np.zeros_like(t), quadratic(t), s, "NCHW", seed=5, callback=lambda i, x, v: i == 9)
    x3, _ = ascend(np.zeros_like(t), quadratic(t), s, "NCHW", seed=6, callback=lambda i, x, v: i == 9)
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)


def test_ascent_settings_are_checked():
    for bad in ({"steps": 0}, {"lr": -1.0}, {"optimizer": "lbfgs"}, {"clip": (1, 0)}, {"l2": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            split_options(bad)
    s, rest = split_options({"steps": 3, "seed": 1})
    assert s.steps == 3 and rest == {"seed": 1}
    assert Ascent(steps=11, lr=1.0).lr_at(0) == 1.0 and abs(Ascent(steps=11, lr=1.0).lr_at(10) - 0.1) < 1e-12


# -- class model on a linear model: closed form -----------------------------------------------
def test_class_model_of_a_linear_model_is_the_weight_row():
    """max w_c . x - l2/2 ||x||^2 is reached at x = w_c / l2."""
    ad = LinearAdapter()
    res = class_model(ad, [2, 0], seed=0, steps=80, lr=0.5, l2=1.0, tv=0.0, normalise=False, jitter=0, blur_sigma=0.0,
                      optimizer="sgd", schedule="constant", progress=False)
    np.testing.assert_allclose(res.images.reshape(2, -1), ad.w[[2, 0]], atol=1e-4)
    assert res.images.shape == (2, 6, 5, 3)
    assert res.meta["scores"][0, 2] > res.meta["start_scores"][0, 2] + 10
    with pytest.raises(ValueError, match="out of range"):
        class_model(ad, 7, steps=2, progress=False)
    with pytest.raises(TypeError, match="unknown option"):
        class_model(ad, 1, stpes=2)
    with pytest.raises(TypeError, match="class index"):
        class_model(ad, "cat")


# -- cotangents and ranking -----------------------------------------------------------------------
def test_cotangents_by_hand(rng):
    out = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(one_hot_rows(out, np.array([1, 3, 1])), np.eye(4, dtype=np.float32)[[1, 3, 1]])
    a = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
    cot = channel_mean_cotangent(a, np.array([4, 0]))
    assert cot[0, 4].sum() == pytest.approx(1.0) and cot[1, 0].sum() == pytest.approx(1.0) and np.abs(cot).sum() == pytest.approx(2.0)
    assert ((cot * a).sum(axis=(1, 2, 3)) == pytest.approx([a[0, 4].mean(), a[1, 0].mean()]))
    with pytest.raises(ValueError, match="5 channels"):
        channel_mean_cotangent(a, np.array([5]))


def test_rank_strongest_and_keep_one(rng):
    a = rng.uniform(size=(2, 6, 3, 3)).astype(np.float32)
    a[:, 4] += 2.0
    a[:, 1] += 1.0
    np.testing.assert_array_equal(rank_channels(a, 3)[:2], [4, 1])
    np.testing.assert_array_equal(rank_channels(a, 6), np.argsort(-a.mean(axis=(0, 2, 3)), kind="stable"))
    one = a[:1].copy()
    one[0, 5, 2, 1] = 10.0
    ch, pos = strongest(one, 2)
    assert ch.tolist() == [5, 4] and pos[0] == 2 * 3 + 1
    cot = keep_one(np.repeat(one, 2, 0), ch, pos)
    assert np.count_nonzero(cot) == 2 and cot[0, 5, 2, 1] == 10.0 and cot[1, 4].max() == one[0, 4].max()


# -- results and figures --------------------------------------------------------------------------
def test_figures_and_save(tmp_path, rng):
    v = Visualisation("class_model", rng.normal(size=(3, 3, 8, 8)).astype(np.float32), "NCHW",
                      ["a", "b", "c"], "title", source=rng.uniform(size=(1, 3, 8, 8)))
    assert v.display().shape == (3, 8, 8, 3) and v.display().min() >= 0 and v.display().max() <= 1
    fig = v.figure()
    assert sum(ax.has_data() for ax in fig.axes) == 4  # the input, then three images
    assert v.save(tmp_path / "v.png").stat().st_size > 1000
    with np.load(v.save(tmp_path / "v.npz")) as z:
        np.testing.assert_array_equal(z["images"], v.images)
    with pytest.raises(ValueError, match=".png"):
        v.save(tmp_path / "v.jpg")
    fm = FeatureMaps(rng.uniform(size=(2, 5, 4, 4)), np.arange(5), rng.uniform(size=(2, 5)), "l")
    assert sum(ax.has_data() for ax in fm.figure(1).axes) == 5
    with pytest.raises(ValueError, match="image"):
        fm.figure(2)
    assert sum(ax.has_data() for ax in Filters(rng.normal(size=(6, 3, 3, 3)), "c").figure().axes) == 6
    grey = Filters(rng.normal(size=(4, 10, 3, 3)), "c").figure(max_inputs=3)
    assert sum(ax.has_data() for ax in grey.axes) == 12


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_deep_dream_resize_adjoint_is_the_transpose(layout, rng):
    """<R x, g> == <x, R^T g>: the gradient through the resize of a smaller octave is exact."""
    from agnostic_cam.features.deep_dream import resize_adjoint, resize_images

    small = (5, 7) if layout == "NCHW" else (5, 7)
    x = rng.normal(size=(2, 3, *small) if layout == "NCHW" else (2, *small, 3)).astype(np.float32)
    big = (9, 12)
    rx = resize_images(x, big, layout)
    g = rng.normal(size=rx.shape).astype(np.float32)
    back = resize_adjoint(g, small, layout)
    assert back.shape == x.shape
    np.testing.assert_allclose((rx * g).sum(), (x * back).sum(), rtol=1e-5)
