"""Degenerate maps are flagged per image, never hidden (issue 18; agnostic_cam/core/degenerate.py)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.core.degenerate import EPS32, K, DegenerateMapWarning, reasons


def test_rule_on_hand_built_maps():
    ok = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    const = np.full((1, 4, 4), 3.0, np.float32)
    noise = (1.0 + np.array([0, 1, 2, 0], np.float32) * EPS32).reshape(1, 2, 2)  # ulps of 1
    hm_ok, hm_zero = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 4, 4), np.zeros((1, 4, 4), np.float32)
    assert reasons(ok, hm_ok)[0] == ""
    assert reasons(const, hm_zero)[0].startswith("constant map")
    assert reasons(noise, hm_ok, np.array([1.0]))[0].startswith("rounding noise")
    # the same small range is fine when the terms that formed it are that small too (scale-aware)
    assert reasons(noise - 1.0, hm_ok, np.array([2 * EPS32]))[0] == ""
    assert reasons(-ok - 1, hm_zero)[0].startswith("constant heatmap")  # a CAM negative everywhere
    # exactly at the threshold: flagged; just above: not
    edge = np.array([[[0.0, K * EPS32]]], np.float64)
    assert reasons(edge, hm_ok[:, :1, :2], np.array([1.0]))[0] != ""
    assert reasons(edge * 1.01, hm_ok[:, :1, :2], np.array([1.0]))[0] == ""


def _net(torch, conv_scale: float, fc_zero: bool = False):
    """conv (weights * conv_scale, bias 1) -> ReLU (target 'act') -> GAP -> linear."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    with torch.no_grad():
        net[2].weight.mul_(conv_scale)
        net[2].bias.fill_(1.0)
        if fc_zero:
            net[6].weight.zero_()
    return net


@pytest.fixture(scope="module")
def x(torch):
    return np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("conv_scale", [0.0, 1e-7])
def test_constant_activations_flag_eigencam(torch, x, conv_scale):
    """conv_scale 0: the layer is exactly constant; 1e-7: it varies by a few float32 ulps only."""
    ex = Explainer.from_torch(_net(torch, conv_scale), "3", input_shape=(3, 16, 16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = ex.explain(x, "eigencam")
    assert e.degenerate.tolist() == [True, True], e.degenerate_reason
    assert all(r for r in e.degenerate_reason)
    flagged = [w for w in caught if issubclass(w.category, DegenerateMapWarning)]
    assert len(flagged) == 1 and "2 of 2 eigencam" in str(flagged[0].message)
    assert e.heatmap.shape == (2, 16, 16)  # the map is still returned, not hidden


def test_constant_zero_ablation_map_flagged(torch, x, tmp_path):
    """The output ignores the layer (zero head weights): every ablation weight is 0, the map is 0."""
    ex = Explainer.from_torch(_net(torch, 1.0, fc_zero=True), "3", input_shape=(3, 16, 16))
    with pytest.warns(DegenerateMapWarning):
        e = ex.explain(x, "ablationcam")
    assert np.all(e.raw == 0) and e.degenerate.all()
    assert e.degenerate_reason[0] == "constant map (every value is 0)"
    back = type(e).load(e.save(tmp_path / "e.npz"))
    assert back.degenerate.tolist() == e.degenerate.tolist() and back.degenerate_reason[1] == e.degenerate_reason[1]


METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam",
           "cam", "saliency", "guided_backprop", "integrated_gradients"]


def test_demo_network_maps_are_not_flagged(torch, demo_model):
    from agnostic_cam.demo.data import make_shapes

    x = make_shapes(4, seed=3)[0]
    ex = Explainer.from_torch(demo_model, "features.relu3", input_shape=tuple(x.shape[1:]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateMapWarning)
        for m in METHODS:
            e = ex.explain(x, m)
            assert not e.degenerate.any(), (m, e.degenerate_reason)


def test_audit_report_flags_and_counts_degenerate_maps(torch, tmp_path):
    """Audit of a model whose head ignores the layer: every Ablation-CAM map is all zero (flagged per
    image and counted per method), Eigen-CAM maps are fine (count 0)."""
    import json

    import onnx
    from onnx_helpers import export_torch, torch_net
    from PIL import Image

    from agnostic_cam.cli import main

    net = torch_net(seed=4)
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.copy_(torch.arange(5.0))
    onnx.save(export_torch(net, 32), str(tmp_path / "m.onnx"))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(7)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(imgs / f"img{i}.png")
    assert main(["audit", str(tmp_path / "m.onnx"), str(imgs), "--out", str(tmp_path / "o"), "--steps", "3",
                 "--no-progress", "--methods", "ablationcam,eigencam"]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["summary"]["ablationcam"]["degenerate"] == 2 and res["summary"]["eigencam"]["degenerate"] == 0
    assert all(r["methods"]["ablationcam"]["degenerate"].startswith("constant map") for r in res["images"])
    html = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    assert html.count("degenerate map: constant map") == 2 and "<th title=" in html
