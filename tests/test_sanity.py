"""Model-randomisation sanity check (Adebayo et al. 2018) on the demo network, and its metrics
against independent references (scipy's spearmanr; SSIM by a direct loop over windows)."""
import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.evaluation.sanity import learned_layers, model_randomization
from agnostic_cam.errors import InputError
from agnostic_cam.evaluation.similarity import spearman, ssim


def edge_baseline(ex, x):
    """The image's own gradient magnitude: ignores the model, so randomising it cannot change it."""
    g = x.mean(axis=1)
    e = np.abs(np.diff(g, axis=-1, prepend=g[..., :1])) + np.abs(np.diff(g, axis=-2, prepend=g[..., :1, :]))
    e -= e.min(axis=(1, 2), keepdims=True)
    return e / e.max(axis=(1, 2), keepdims=True)


@pytest.fixture(scope="module")
def shapes():
    from agnostic_cam.demo.data import make_shapes

    return make_shapes(4, seed=5)[0]


def test_gradcam_fails_to_survive_randomisation_while_edges_do(torch, demo_model, shapes):
    before = {k: v.clone() for k, v in demo_model.state_dict().items()}
    ex = Explainer.from_torch(demo_model, "features.relu3", progress=False)
    res = model_randomization(ex, shapes, "gradcam")
    assert res.layers[0].endswith("fc/Gemm") and len(res.layers) == 4 and res.steps == [1, 2, 3, 4]
    assert res.spearman.shape == res.ssim.shape == (4, 4) and res.maps.shape == (4, 4, 64, 64)
    np.testing.assert_allclose(res.original, ex.explain(shapes, "gradcam").heatmap, atol=1e-6)
    # once the top conv layer is randomised too, Grad-CAM's maps no longer resemble the original
    assert np.nanmean(res.spearman[1:]) < 0.3 and res.final()["spearman"] < 0.3
    assert res.insensitive() is False
    base = model_randomization(ex, shapes, edge_baseline)
    assert base.spearman.min() > 0.999 and base.ssim.min() > 0.999 and base.insensitive()
    for k, v in demo_model.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k]), k
    fig = res.figure()
    assert len(fig.axes) == 6


def test_bare_onnx_file_forward_method(torch, demo_model, shapes, tmp_path):
    """Works on a bare ONNX file (gradients through the ONNX gradient backend), fewer steps than layers."""
    ex_t = Explainer.from_torch(demo_model, "features.relu3", progress=False)
    path = tmp_path / "demo.onnx"
    path.write_bytes(ex_t.adapter.engine(shapes.shape[1:]).model.SerializeToString())
    ex = Explainer.from_onnx(str(path), target_layer="activation", progress=False)
    res = model_randomization(ex, shapes[:2], "gradcam", steps=2, seed=1)
    assert res.steps == [1, 4]
    assert res.spearman.shape == (2, 2) and res.final()["spearman"] < min(0.3, res.spearman[0].mean())
    with pytest.raises(ValueError, match="steps"):
        model_randomization(ex, shapes[:1], "eigencam", steps=0)


def test_learned_layers_in_graph_order(torch, resnet18):
    ex = Explainer.from_torch(resnet18, "layer4", progress=False)
    layers = learned_layers(ex.adapter.engine((3, 64, 64)).model)
    assert [ly.op for ly in layers].count("Conv") == 20 and layers[-1].op == "Gemm"


def test_spearman_matches_scipy(rng):
    from scipy.stats import spearmanr

    a = rng.normal(size=(9, 7))
    b = a + rng.normal(size=(9, 7))
    b[b < 0] = 0  # ties, as in a ReLU'd map
    a[a < -0.5] = 0
    assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)


def test_ssim_matches_windowed_definition(rng):
    a, b = rng.random((12, 10)), rng.random((12, 10))
    vals = []
    for i in range(12 - 6):
        for j in range(10 - 6):
            p, q = a[i:i + 7, j:j + 7].ravel(), b[i:i + 7, j:j + 7].ravel()
            c = np.cov(p, q)  # sample covariance (ddof 1)
            vals.append((2 * p.mean() * q.mean() + 1e-4) * (2 * c[0, 1] + 9e-4)
                        / ((p.mean() ** 2 + q.mean() ** 2 + 1e-4) * (c[0, 0] + c[1, 1] + 9e-4)))
    assert ssim(a, b) == pytest.approx(np.mean(vals), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("shape, win", [((6, 6), 5), ((5, 9), 5), ((4, 4), 3), ((3, 8), 3)])
def test_ssim_of_maps_smaller_than_the_window(rng, shape, win):
    """Maps under 7 x 7 (a layer-resolution map) use the largest odd window that fits: scikit-image's
    structural_similarity with that win_size (it refuses the default 7 on them); was NaN and a warning
    for even sizes (the window grew past the map)."""
    from skimage.metrics import structural_similarity

    a, b = rng.random(shape), rng.random(shape)
    want = structural_similarity(a, b, win_size=win, data_range=1.0)
    assert np.isfinite(ssim(a, b)) and ssim(a, b) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("shape", [(2, 2), (1, 5), (2, 9), (1, 1)])
def test_ssim_refuses_maps_without_a_3x3_window(shape):
    with pytest.raises(InputError, match="at least 3 x 3.*heatmap"):
        ssim(np.ones(shape), np.ones(shape))


def test_audit_sanity_rows_and_report(torch, tmp_path, capsys):
    """`audit --sanity`: one row per method in sanity.json, results.json and report.html; a method
    flagged as insensitive is warned about (threshold forced so the flag is exercised)."""
    import json

    import onnx
    from onnx_helpers import export_torch, torch_net
    from PIL import Image

    from agnostic_cam.audit.sanity_check import run_sanity
    from agnostic_cam.cli import main
    from agnostic_cam.demo.data import make_shapes

    model = tmp_path / "net.onnx"
    onnx.save(export_torch(torch_net(), 32), str(model))
    images = tmp_path / "images"
    images.mkdir()
    x = make_shapes(3, size=32, seed=3, layout="NHWC")[0]
    for i in range(3):
        Image.fromarray((x[i] * 255).astype(np.uint8)).save(images / f"img{i}.png")
    out = tmp_path / "out"
    assert main(["audit", str(model), str(images), "--out", str(out), "--steps", "3", "--no-progress",
                 "--methods", "gradcam,eigencam", "--sanity", "--sanity-images", "2"]) == 0
    rows = json.loads((out / "sanity.json").read_text())
    assert [r["method"] for r in rows] == ["gradcam", "eigencam"] and all(r["images"] == 2 for r in rows)
    assert all(r["insensitive"] == (r["spearman"] >= 0.5) and (out / r["figure"]).is_file() for r in rows)
    assert json.loads((out / "results.json").read_text())["sanity"] == rows
    assert "Sanity check: model randomisation" in (out / "report.html").read_text()
    from agnostic_cam.inputs.preprocess import Preprocess

    ex = Explainer.from_onnx(str(model), progress=False)
    capsys.readouterr()
    flagged = run_sanity(ex, Preprocess.for_adapter(ex.adapter), images, ["gradcam"], out, n_images=1,
                         steps=1, threshold=-1.5)
    assert flagged[0]["insensitive"] and "gradcam maps barely change" in capsys.readouterr().err
    assert "WARNING: barely changes" in (out / "report.html").read_text()
