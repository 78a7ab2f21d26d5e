"""Similarity of two maps, as the sanity checks of Adebayo et al. (2018) measure it. NumPy only.

- :func:`spearman`: Spearman rank correlation of two maps (average ranks for ties, so the many
  zeros of a ReLU'd heatmap do not bias it).
- :func:`ssim`: structural similarity (Wang et al. 2004) with scikit-image's defaults for
  ``structural_similarity``: a 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance,
  ``data_range`` 1 (heatmaps are in [0, 1]), the mean over the valid (un-padded) windows. A map
  smaller than the window uses the largest odd window that fits (scikit-image's
  ``win_size=that``); one under 3 x 3 has no window with a sample variance: an InputError.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import InputError


def rank(a: np.ndarray) -> np.ndarray:
    """Average ranks (1..n) of a 1-D array; ties get the mean of their ranks."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], a.size]
    avg = (starts + ends + 1) / 2.0  # mean of the ranks start+1 .. end
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps of equal size; NaN when either map is constant."""
    ra, rb = rank(a), rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _box(m: np.ndarray, w: int) -> np.ndarray:
    """Means over every valid w x w window of a 2-D map: (H - w + 1, W - w + 1)."""
    c = np.pad(np.cumsum(np.cumsum(m, axis=0), axis=1), ((1, 0), (1, 0)))
    s = c[w:, w:] - c[:-w, w:] - c[w:, :-w] + c[:-w, :-w]
    return s / (w * w)


def ssim(a: np.ndarray, b: np.ndarray, win: int = 7, data_range: float = 1.0) -> float:
    """Mean structural similarity of two (H, W) maps; the window shrinks to the largest odd size
    <= min(H, W) (at least 3: smaller maps raise InputError)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"ssim takes two 2-D maps of one shape; got {a.shape} and {b.shape}")
    win = min(win, *a.shape)
    win -= 1 - win % 2  # the largest odd window that fits
    if win < 3:
        raise InputError(f"ssim needs maps of at least 3 x 3 pixels (a window with a sample variance); got "
                         f"{a.shape}. Compare the maps upsampled to the input size (Explanation.heatmap), or use "
                         "spearman")
    ua, ub = _box(a, win), _box(b, win)
    cov = win * win / (win * win - 1)  # sample covariance, as scikit-image
    vaa = cov * (_box(a * a, win) - ua * ua)
    vbb = cov * (_box(b * b, win) - ub * ub)
    vab = cov * (_box(a * b, win) - ua * ub)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (vaa + vbb + c2))
    return float(s.mean())
