"""Layer-free methods (occlusion, RISE, KernelSHAP, LIME): against Captum, exact Shapley values,
least-squares truths and hand-built models with known evidence. Reduced sizes: 64 px ResNet-18,
<= 32 px hand-built models, a few hundred masks / samples."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.errors import ModelError, OptionError
from agnostic_cam.methods.coalitions import grid_labels
from agnostic_cam.methods.occlusion import positions


def region_model(torch, region=(slice(8, 16), slice(16, 24))):
    """Class 0 = mean of ``region`` (over channels); class 1 = mean of the whole image. No conv layer."""
    from torch import nn

    class Region(nn.Module):
        def forward(self, x):
            r = x[:, :, region[0], region[1]].mean(dim=(1, 2, 3))
            return torch.stack([r, x.mean(dim=(1, 2, 3))], dim=1)

    return Region().eval()


def segment_model(torch, size=(8, 16), cells=8):
    """Scores from the means m_j of a 2 x 4 grid's cells, with interactions: f = sum a_j m_j +
    2 m_0 m_3 + relu(m_1 - m_2) - m_4 m_5 m_6."""
    from torch import nn

    labels = torch.as_tensor(grid_labels(size, cells))
    a = torch.linspace(-1, 1, cells)

    class Seg(nn.Module):
        def forward(self, x):
            g = x.mean(dim=1)
            m = torch.stack([(g * (labels == j)).sum(dim=(1, 2)) / (labels == j).sum() for j in range(cells)], 1)
            f = (m * a).sum(1) + 2 * m[:, 0] * m[:, 3] + torch.relu(m[:, 1] - m[:, 2]) - m[:, 4] * m[:, 5] * m[:, 6]
            return torch.stack([f, -f], 1)

    return Seg().eval(), grid_labels(size, cells)


def test_occlusion_equals_captum_on_resnet18(torch, resnet18):
    from captum.attr import Occlusion

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    ex = Explainer.from_torch(resnet18, "layer4", progress=False)
    for window, stride, base in (((16, 16), (8, 8), 0.0), ((12, 20), (10, 7), 0.5)):
        ours = ex.explain(x, "occlusion", target=[3, 7], window=window, stride=stride, baseline=base).raw
        ref = Occlusion(resnet18).attribute(torch.from_numpy(x), sliding_window_shapes=(3, *window),
                                            strides=(3, *stride), baselines=base, target=[3, 7]).numpy()
        assert np.allclose(ref[:, 0], ref[:, 2])  # one value per pixel over channels
        rel = np.abs(ours - ref[:, 0]).max() / np.abs(ref).max()
        assert rel <= 1e-4, rel


def test_occlusion_positions_cover_every_pixel():
    assert positions(10, 4, 4).tolist() == [0, 4, 8]  # the last window is cut at the border
    assert positions(64, 16, 8)[-1] == 48 and positions(5, 5, 3).tolist() == [0]


def exact_shapley(v, m):
    phi = np.zeros(m)
    for j in range(m):
        others = [k for k in range(m) if k != j]
        for r in range(m):
            for s in itertools.combinations(others, r):
                w = math.factorial(r) * math.factorial(m - r - 1) / math.factorial(m)
                phi[j] += w * (v[frozenset(s) | {j}] - v[frozenset(s)])
    return phi


def test_kernelshap_equals_exact_shapley_values(torch):
    """8 players, every coalition sampled (254 <= samples): KernelSHAP's WLS is exactly Shapley."""
    model, labels = segment_model(torch)
    ex = Explainer.from_torch(model, progress=False)
    assert ex.layer is None  # no spatial layer: layer-free only
    x = np.random.default_rng(1).uniform(0.2, 1.0, size=(1, 3, 8, 16)).astype(np.float32)
    base = 0.1
    got = ex.explain(x, "kernelshap", target=0, segments=8, samples=300, baseline=base).raw[0]
    v = {}
    for r in range(9):
        for s in itertools.combinations(range(8), r):
            keep = np.isin(labels, s)[None, None]
            v[frozenset(s)] = float(ex.predict(np.where(keep, x, base).astype(np.float32))[0, 0])
    phi = exact_shapley(v, 8)
    np.testing.assert_allclose(got, phi[labels], rtol=1e-4, atol=1e-6)
    assert abs(phi.sum() - (v[frozenset(range(8))] - v[frozenset()])) < 1e-5  # efficiency


def test_kernelshap_and_lime_recover_a_linear_model(torch):
    """f = sum_j a_j m_j: sampled KernelSHAP (fewer samples than coalitions) and LIME with alpha=0
    both return a_j * (m_j - baseline) exactly (the regression is noise-free)."""
    from torch import nn

    labels = grid_labels((12, 12), 9)
    a = np.linspace(-2, 3, 9)

    class Lin(nn.Module):
        def forward(self, x):
            g = x.mean(dim=1)
            m = torch.stack([g[:, torch.as_tensor(labels == j)].mean(dim=1) for j in range(9)], 1)
            return (m * torch.as_tensor(a, dtype=m.dtype)).sum(1, keepdim=True)

    x = np.random.default_rng(2).uniform(size=(2, 3, 12, 12)).astype(np.float32)
    ex = Explainer.from_torch(Lin().eval(), progress=False)
    means = np.stack([[x[i].mean(0)[labels == j].mean() for j in range(9)] for i in range(2)])
    want = (a * means)[:, labels]
    shap = ex.explain(x, "kernelshap", target=0, segments=9, samples=120, seed=3).raw
    lime = ex.explain(x, "lime", target=0, segments=labels, samples=200, alpha=0.0).raw
    np.testing.assert_allclose(shap, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lime, want, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method, options", [("occlusion", {"window": 6, "stride": 3}),
                                             ("rise", {"masks": 400, "cells": 6}),
                                             ("kernelshap", {"segments": 16, "samples": 200}),
                                             ("lime", {"segments": 16, "samples": 200})])
def test_maximum_inside_the_known_evidence(torch, method, options):
    """Class 0's score is the mean of one region: every layer-free map peaks inside it."""
    model = region_model(torch)
    x = np.random.default_rng(3).uniform(0.5, 1.0, size=(2, 3, 32, 32)).astype(np.float32)
    ex = Explainer.from_torch(model, progress=False)
    exp = ex.explain(x, method, target=0, **options)
    assert exp.raw.shape == (2, 32, 32) and exp.heatmap.shape == (2, 32, 32)
    for m in exp.raw:
        y, xx = np.unravel_index(np.argmax(m), m.shape)
        assert 8 <= y < 16 and 16 <= xx < 24, (method, y, xx)
    with pytest.raises(ModelError, match="target_layer="):
        ex.explain(x, "gradcam", target=0)


def test_onnx_and_nhwc_give_the_same_maps(torch, tmp_path):
    """The same model as a bare ONNX file (no layer needed) and on NHWC input: identical maps."""
    from torch import nn

    model = region_model(torch)
    x = np.random.default_rng(4).uniform(size=(1, 3, 32, 32)).astype(np.float32)
    ref = Explainer.from_torch(model, progress=False).explain(x, "rise", target=0, masks=64, cells=4).raw
    path = tmp_path / "region.onnx"
    torch.onnx.export(model, torch.from_numpy(x), str(path), dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "n"}})
    onnx_ex = Explainer.from_onnx(str(path), progress=False)
    np.testing.assert_allclose(onnx_ex.explain(x, "rise", target=0, masks=64, cells=4).raw, ref, rtol=1e-5, atol=1e-6)

    class NHWC(nn.Module):
        def forward(self, x):
            return model(x.permute(0, 3, 1, 2))

    nhwc = Explainer.from_onnx(_export(torch, NHWC(), x.transpose(0, 2, 3, 1), tmp_path / "nhwc.onnx"),
                               layout="NHWC", progress=False)
    got = nhwc.explain(x.transpose(0, 2, 3, 1), "occlusion", target=0, window=4).raw
    want = Explainer.from_torch(model, progress=False).explain(x, "occlusion", target=0, window=4).raw
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _export(torch, model, x, path):
    torch.onnx.export(model, torch.from_numpy(np.ascontiguousarray(x)), str(path), dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "n"}})
    return str(path)


def test_options_are_checked(torch):
    ex = Explainer.from_torch(region_model(torch), progress=False)
    x = np.ones((1, 3, 16, 16), np.float32)
    for method, bad in (("occlusion", {"window": 0}), ("occlusion", {"window": 4, "stride": 6}),
                        ("rise", {"p": 1.5}), ("kernelshap", {"segments": "slic"}), ("lime", {"samples": 1}),
                        ("occlusion", {"baseline": "noise"}), ("occlusion", {"window": 32})):
        with pytest.raises(OptionError):
            ex.explain(x, method, target=0, **bad)
