"""Explanation helpers: overlay arithmetic, figures, save/load; the demo writes its page."""
import numpy as np
import pytest

from agnostic_cam import Explainer, Explanation
from agnostic_cam.render.figures import colorize, compare_figure, overlay, to_display


def make_exp(n=2, h=8, w=6):
    heat = np.linspace(0, 1, n * h * w, dtype=np.float32).reshape(n, h, w)
    return Explanation(heat, heat[:, ::2, ::2], np.array([1, 2][:n]), np.array([0.5, 1.5][:n]), "gradcam", "layer")


def test_overlay_is_the_documented_blend():
    e = make_exp()
    img = np.random.default_rng(0).integers(0, 256, size=(2, 8, 6, 3), dtype=np.uint8)
    out = e.overlay(img, alpha=0.3)
    assert out.shape == (2, 8, 6, 3) and out.dtype == np.uint8
    ref = np.round((0.7 * img / 255 + 0.3 * colorize(e.heatmap)) * 255)
    np.testing.assert_allclose(out, ref, atol=1)
    np.testing.assert_array_equal(e.overlay(img, alpha=0.0), img)
    # channels-first float input gives the same result as channels-last uint8
    np.testing.assert_allclose(e.overlay(img.transpose(0, 3, 1, 2) / 255.0, alpha=0.3), out, atol=1)


def test_to_display_scales_normalised_images():
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 4)).astype(np.float32)
    d = to_display(x)
    assert d.shape == (2, 5, 4, 3)
    np.testing.assert_allclose(d.min(axis=(1, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(d.max(axis=(1, 2, 3)), 1, atol=1e-6)
    assert to_display(np.zeros((4, 4, 1), np.uint8)).shape == (1, 4, 4, 3)


def test_overlay_errors():
    e = make_exp()
    with pytest.raises(ValueError, match="differ in batch size or"):
        e.overlay(np.zeros((2, 9, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.zeros((2, 8, 6, 3), np.uint8), e.heatmap, alpha=2)


def test_save_load_and_figures(tmp_path):
    e = make_exp()
    p = e.save(tmp_path / "e.npz")
    back = Explanation.load(p)
    np.testing.assert_array_equal(back.heatmap, e.heatmap)
    np.testing.assert_array_equal(back.targets, e.targets)
    assert (back.method, back.layer) == ("gradcam", "layer")
    img = np.zeros((2, 8, 6, 3), np.uint8)
    e.save(tmp_path / "e.png", img)
    assert (tmp_path / "e.png").stat().st_size > 1000
    fig = compare_figure(img, {"a": e, "b": e})
    assert len(fig.axes) == 2 * 3 + 1  # + the colour bar
    with pytest.raises(ValueError, match=".npz"):
        e.save(tmp_path / "e.txt")


def test_demo_writes_page(tmp_path, demo_model):
    from agnostic_cam.demo.run import run_demo

    index = run_demo(tmp_path, n_images=2, sections=["cams"])
    page = index.read_text()
    assert "cam_methods.png" in page and "scorecam" in page
    assert (tmp_path / "cam_methods.png").stat().st_size > 10_000


def test_demo_model_learned_its_task(demo_model):
    from agnostic_cam.demo.torch_model import accuracy

    assert accuracy(demo_model) > 0.7


def test_demo_maps_point_at_the_shape(demo_model):
    """On the trained demo model, Grad-CAM's peak falls inside the shape's box for most images."""
    from agnostic_cam.demo.data import make_shapes

    x, y, boxes = make_shapes(24, seed=99)
    exp = Explainer.from_torch(demo_model, "features.relu3", progress=False).explain(x, "gradcam", target=y)
    hits = 0
    for hm, (y0, x0, y1, x1) in zip(exp.heatmap, boxes):
        py, px = np.unravel_index(hm.argmax(), hm.shape)
        hits += (y0 - 4 <= py < y1 + 4) and (x0 - 4 <= px < x1 + 4)
    assert hits / len(x) > 0.8
