"""How far two heatmaps of one image are apart: the numbers :func:`agnostic_cam.compare.compare`
reports per image, per method and per pair of models. NumPy only.

- ``max_diff`` / ``mean_diff``: largest and mean absolute difference of the two (H, W) maps
  (both in [0, 1]);
- ``spearman``: rank correlation (:func:`agnostic_cam.evaluation.similarity.spearman`; NaN when a
  map is constant);
- ``ssim``: structural similarity (:func:`agnostic_cam.evaluation.similarity.ssim`, data range 1);
- ``iou``: overlap of the two maps' top ``top`` share of pixels (intersection over union of the
  pixel sets; ties broken by position, so a constant map's "top" is its first pixels).
"""
from __future__ import annotations

import math

import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.evaluation.similarity import spearman, ssim

MAP_MEASURES = ("max_diff", "mean_diff", "spearman", "ssim", "iou")


def check_top(top: float) -> float:
    """``top`` as a share of pixels in (0, 1]; OptionError otherwise."""
    try:
        ok = 0 < float(top) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OptionError(f"top (the share of pixels whose overlap is measured) must be in (0, 1], e.g. 0.1 for "
                          f"the top 10%; got {top!r}")
    return float(top)


def top_mask(heatmap: np.ndarray, top: float) -> np.ndarray:
    """Boolean mask of the ``top`` share (at least one) of the pixels of ``heatmap``, highest first."""
    flat = np.asarray(heatmap, np.float64).reshape(-1)
    k = max(1, int(math.ceil(top * flat.size - 1e-9)))
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask


def top_iou(a: np.ndarray, b: np.ndarray, top: float) -> float:
    """Intersection over union of the top ``top`` share of pixels of two maps."""
    ma, mb = top_mask(a, top), top_mask(b, top)
    return float((ma & mb).sum() / (ma | mb).sum())


def map_measures(a: np.ndarray, b: np.ndarray, top: float = 0.1) -> dict[str, float]:
    """The :data:`MAP_MEASURES` of two (H, W) heatmaps of one image."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d = np.abs(a - b)
    return {"max_diff": float(d.max()), "mean_diff": float(d.mean()), "spearman": spearman(a, b),
            "ssim": ssim(a, b), "iou": top_iou(a, b, top)}


def nanmean(values) -> float | None:
    """Mean of the finite values, None when there is none (a JSON-friendly ``np.nanmean``)."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return sum(v) / len(v) if v else None


def aggregate(rows: list[dict]) -> dict:
    """One method and pair over all images: the largest ``max_diff`` and ``score_diff``, the means of
    the rest, and the share of images whose top-1 predictions agree."""
    out = {"images": len(rows), "max_diff": max(r["max_diff"] for r in rows),
           "mean_diff": nanmean(r["mean_diff"] for r in rows), "spearman": nanmean(r["spearman"] for r in rows),
           "ssim": nanmean(r["ssim"] for r in rows), "iou": nanmean(r["iou"] for r in rows),
           "top1_agree": sum(bool(r["top1_agree"]) for r in rows) / len(rows),
           "score_diff": max(r["score_diff"] for r in rows)}
    return out
