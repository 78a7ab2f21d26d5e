"""Localisation metrics: does the map lie on the object? Maps (N, H, W) against boolean object masks
(N, H, W); one score per image, every one **higher is better**, NaN where a mask is empty.

Named as Quantus's classes (Hedström et al. 2023), same formulas. Maps are used as given (no
re-normalisation; ``Explanation.heatmap`` is in [0, 1]); pass ``abs=True`` for signed maps.
No forward pass: these need the maps and the masks only. The pointing game lives in
:func:`agnostic_cam.evaluation.metrics.pointing_game` (boxes or masks).
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import InputError
from agnostic_cam.evaluation.perturb import check_maps, check_masks


def boxes_to_masks(boxes, shape: tuple) -> np.ndarray:
    """Boolean masks (N, H, W) from one box or box list per image: (y0, x0, y1, x1), end-exclusive pixels."""
    n, h, w = shape
    if len(boxes) != n:
        raise InputError(f"got {len(boxes)} box entries for {n} images; pass one box (or (K, 4) box list) per image")
    out = np.zeros((n, h, w), bool)
    for i, b in enumerate(boxes):
        for y0, x0, y1, x1 in np.asarray(b, np.float64).reshape(-1, 4):
            out[i, max(0, int(np.floor(y0))):max(0, int(np.ceil(y1))), max(0, int(np.floor(x0))):max(0, int(np.ceil(x1)))] = True
    return out


def _prep(maps, masks, abs: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = check_maps(maps)
    s = check_masks(masks, m.shape)
    m = np.abs(m) if abs else m
    n = m.shape[0]
    return m.reshape(n, -1), s.reshape(n, -1), s.reshape(n, -1).sum(1) == 0


def energy_based_pointing_game(maps, masks, abs: bool = False) -> np.ndarray:
    """(N,) share of the map's energy inside the object: sum(map * mask) / sum(map)
    (Wang et al. 2020, "Score-CAM", sec. 5.2; the maps are min-max normalised heatmaps)."""
    a, s, empty = _prep(maps, masks, abs)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a * s).sum(1) / a.sum(1)
    out[empty] = np.nan
    return out


def attribution_localisation(maps, masks, abs: bool = True, positive_attributions: bool = False) -> np.ndarray:
    """(N,) inside / (total + 1e-9) attribution (Kohlbrenner et al. 2020), Quantus's unweighted form;
    ``positive_attributions`` clips negative values first. NaN where the ratio exceeds 1."""
    a, s, empty = _prep(maps, masks, abs)
    if positive_attributions:
        a = np.clip(a, 0, None)
    out = (a * s).sum(1) / (a.sum(1) + 1e-9)
    out[empty | (out > 1)] = np.nan
    return out


def top_k_intersection(maps, masks, k: int = 1000, concept_influence: bool = False, abs: bool = False) -> np.ndarray:
    """(N,) share of the ``k`` highest-valued pixels that lie in the mask (Theiner et al. 2021);
    ``concept_influence`` divides by the object's share of the image."""
    a, s, empty = _prep(maps, masks, abs)
    n = a.shape[0]
    top = np.argsort(-a, axis=1)[:, :int(k)]
    out = s[np.arange(n)[:, None], top].mean(1)
    if concept_influence:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = out * a.shape[1] / s.sum(1)
    out[empty] = np.nan
    return out


def relevance_mass_accuracy(maps, masks, abs: bool = False) -> np.ndarray:
    """(N,) relevance inside the mask over the total relevance (Arras et al. 2022)."""
    a, s, empty = _prep(maps, masks, abs)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a * s).sum(1) / a.sum(1)
    out[empty] = np.nan
    return out


def relevance_rank_accuracy(maps, masks, abs: bool = False) -> np.ndarray:
    """(N,) with K the object's pixel count: the share of the K highest-valued pixels inside the mask
    (Arras et al. 2022)."""
    a, s, empty = _prep(maps, masks, abs)
    n = a.shape[0]
    order = np.argsort(-a, axis=1)
    hits = s[np.arange(n)[:, None], order]
    kk = s.sum(1)
    first = np.arange(a.shape[1])[None] < kk[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (hits & first).sum(1) / kk
    out[empty] = np.nan
    return out


def auc(maps, masks, abs: bool = False) -> np.ndarray:
    """(N,) area under the ROC curve of the map as a detector of the object's pixels (Fawcett 2006),
    ties counted half (the Mann-Whitney statistic); NaN if the mask is empty or full."""
    from scipy.stats import rankdata

    a, s, _ = _prep(maps, masks, abs)
    out = np.full(a.shape[0], np.nan)
    for i, (ai, si) in enumerate(zip(a, s)):
        p, q = int(si.sum()), int((~si).sum())
        if p and q:
            r = rankdata(ai)
            out[i] = (r[si].sum() - p * (p + 1) / 2) / (p * q)
    return out
