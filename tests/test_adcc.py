"""ADCC (Poppi et al. 2021) against a reference written here from the paper (torch forward passes of
the tiny seeded CNN, scipy's Pearson), and OpenVINO XAI's set-level ADCC (``ADCC.evaluate``: the
three parts averaged over the images, then combined) rebuilt from the per-image parts."""
from __future__ import annotations

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.errors import InputError
from agnostic_cam.evaluation.adcc import adcc, adcc_parts, combine


def test_adcc_equals_the_paper(torch):
    from scipy.stats import pearsonr

    from agnostic_cam.demo.tiny import tiny_cnn, tiny_images

    model = tiny_cnn()
    ex = Explainer.from_torch(model, "relu2", progress=False)
    x = tiny_images(4)
    maps = ex.explain(x, "gradcam").heatmap
    got = adcc_parts(ex, x, maps, "gradcam")
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(x)), 1).double().numpy()
        t = p.argmax(1)
        masked = x * maps[:, None]
        pm = torch.softmax(model(torch.from_numpy(masked)), 1).double().numpy()
    for i in range(len(x)):
        y, o = p[i, t[i]], pm[i, t[i]]
        ad = max(0.0, y - o) / y
        again = ex.explain(masked[i:i + 1], "gradcam", target=int(t[i])).heatmap[0]
        coh = (pearsonr(maps[i].ravel().astype(np.float64), again.ravel().astype(np.float64))[0] + 1) / 2
        com = float(np.abs(maps[i]).sum()) / maps[i].size
        want = 3 / (1 / coh + 1 / (1 - com) + 1 / (1 - ad))
        assert got["average_drop"][i] == pytest.approx(ad, abs=1e-6)
        assert got["coherency"][i] == pytest.approx(coh, abs=1e-6)
        assert got["complexity"][i] == pytest.approx(com, abs=1e-6)
        assert got["adcc"][i] == pytest.approx(want, abs=1e-6)
    np.testing.assert_allclose(adcc(ex, x, maps, "gradcam"), got["adcc"], atol=0)
    assert ((got["adcc"] >= 0) & (got["adcc"] <= 1)).all()
    # OpenVINO XAI's ADCC.evaluate: one number for the set, from the parts' means
    means = [np.mean(got[k]) for k in ("coherency", "complexity", "average_drop")]
    assert combine(*means) == pytest.approx(3 / (1 / means[0] + 1 / (1 - means[1]) + 1 / (1 - means[2])), abs=1e-12)


def test_adcc_bounds_and_bad_maps(torch):
    from agnostic_cam.demo.tiny import tiny_cnn, tiny_images

    assert combine(1.0, 0.0, 0.0) == 1.0  # perfect parts
    assert combine(0.5, 0.2, 1.0) == 0.0  # the whole confidence dropped
    ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
    x = tiny_images(2)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        adcc(ex, x, np.full((2, 32, 32), 2.0))
    with pytest.raises(InputError, match="maps must be"):
        adcc(ex, x, np.zeros((2, 16, 16)))
