"""Complexity metrics: how concentrated is a map? Maps (N, H, W), one score per image; no forward pass.

Named as Quantus's classes, same formulas, on |map| (Quantus's default ``abs=True``); maps are used
as given, not re-normalised.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.evaluation.perturb import check_maps


def _flat(maps) -> np.ndarray:
    m = np.abs(check_maps(maps))
    return m.reshape(m.shape[0], -1)


def sparseness(maps) -> np.ndarray:
    """(N,) Gini index of |map| + 1e-7 (Chalasani et al. 2020); in [0, 1], **higher is better**
    (a few pixels carry the relevance)."""
    a = np.sort(_flat(maps) + 1e-7, axis=1)
    d = a.shape[1]
    k = np.arange(1, d + 1)[None]
    return ((2 * k - d - 1) * a).sum(1) / (d * a.sum(1))


def complexity(maps) -> np.ndarray:
    """(N,) entropy of the map as a distribution, p = |map| / sum |map| (Bhatt et al. 2020);
    **lower is better**."""
    a = _flat(maps)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / a.sum(1, keepdims=True)
    return -(p * np.log(p + 1e-12)).sum(1)


def effective_complexity(maps, eps: float = 1e-5) -> np.ndarray:
    """(N,) number of pixels with |map| > ``eps`` (Nguyen & Martinez 2020); **lower is better**."""
    return (_flat(maps) > eps).sum(1).astype(np.int64)
