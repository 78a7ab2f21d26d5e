"""Claims checked against references written here, outside the library (issue 29, holes):
RISE against the paper's formula with masks drawn by hand; ROAD with its default noise."""
import math

import numpy as np

from agnostic_cam import Explainer
from agnostic_cam.evaluation.road import impute, road


def rise_by_hand(torch, model, x, targets, masks, cells, p, seed):
    """Petsiuk et al. 2018: masks as in Sec. 3.2 (binary cells x cells grid, bilinear upsampling
    to (cells + 1) * ceil(H / cells), a random crop), drawn from the same seed in the same order
    (grid, then the shifts); S = 1 / (m p) sum_i f(I . M_i) M_i (eq. 6), in float64."""
    rng = np.random.default_rng(seed)
    n, _, H, W = x.shape
    ch, cw = math.ceil(H / cells), math.ceil(W / cells)
    grid = torch.from_numpy((rng.random((masks, cells, cells)) < p).astype(np.float64))[:, None]
    up = torch.nn.functional.interpolate(grid, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear",
                                         align_corners=False)[:, 0].numpy()
    dy, dx = rng.integers(0, ch, masks), rng.integers(0, cw, masks)
    m = np.stack([up[k, dy[k]:dy[k] + H, dx[k]:dx[k] + W] for k in range(masks)])
    out = np.zeros((n, H, W))
    m64 = model.double()
    try:
        for i in range(n):
            with torch.no_grad():
                f = m64(torch.from_numpy(x[i][None].astype(np.float64) * m[:, None]))[:, targets[i]].numpy()
            out[i] = np.tensordot(f, m, axes=1) / (masks * p)
    finally:
        model.float()
    return out


def test_rise_is_the_papers_formula(torch):
    from torch import nn

    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(24, 4)).eval()
    x = np.random.default_rng(4).normal(size=(2, 3, 16, 12)).astype(np.float32)
    ex = Explainer.from_torch(model, "1", progress=False)
    got = ex.explain(x, "rise", target=[1, 3], masks=48, cells=4, p=0.4, seed=7, batch_size=48).raw
    ref = rise_by_hand(torch, model, x, [1, 3], 48, 4, 0.4, 7)
    # float32 masks and forward passes against float64: 48 masked scores summed, each ~1e-7 relative
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    other = ex.explain(x, "rise", target=[1, 3], masks=48, cells=4, p=0.4, seed=8, batch_size=48).raw
    assert np.abs(other - ref).max() > 1e-2 * np.abs(ref).max()  # the comparison sees the masks


def test_road_default_noise(torch, small_cnn):
    """ROAD's default imputation adds Gaussian noise of std 0.01 at the removed pixels only (as
    pytorch-grad-cam's NoisyLinearImputer does, whose noise is unseeded: compared in distribution),
    seeded, so the default ROAD score is reproducible and differs from the noise-free one."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 40, 40)).astype(np.float32)
    keep = rng.uniform(size=(40, 40)) > 0.5
    clean = impute(img, keep, noise=0.0)
    ours = impute(img, keep, rng=np.random.default_rng(3)) - clean  # default noise
    theirs = NoisyLinearImputer()(torch.from_numpy(img), torch.from_numpy(keep.astype(np.float32))).numpy() - clean
    for r in (ours, theirs):
        np.testing.assert_array_equal(r[:, keep], 0)
        # 3 x ~800 draws: the sample std is within 6% of sigma (4 standard errors), the mean within 1e-3 (5)
        assert abs(r[:, ~keep].std() / 0.01 - 1) < 0.06 and abs(r[:, ~keep].mean()) < 1e-3, r[:, ~keep].std()
    x = np.random.default_rng(1).normal(size=(2, 3, 24, 24)).astype(np.float32)
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    maps = ex.explain(x, "gradcam", target=[1, 3]).heatmap
    a, b = road(ex, x, maps, targets=[1, 3], percentiles=(20, 50)), road(ex, x, maps, targets=[1, 3], percentiles=(20, 50))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, road(ex, x, maps, targets=[1, 3], percentiles=(20, 50), noise=0.0))
