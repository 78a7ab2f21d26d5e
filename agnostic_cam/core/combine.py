"""Explanations put together: several target layers averaged, image groups put back in order."""
from __future__ import annotations

import dataclasses

import numpy as np

from agnostic_cam.core.explanation import Explanation
from agnostic_cam.core.imaging import minmax, resize


def average_layers(parts: list[Explanation], size: tuple[int, int]) -> Explanation:
    """One explanation from CAMs (N, h_l, w_l) of several target layers, as pytorch-grad-cam does:
    per layer ReLU, min-max to [0, 1] and bilinear resize to ``size`` (H, W); then the mean over
    layers, ReLU and min-max again. ``raw`` is that mean (N, H, W) before the last min-max;
    ``meta["raw_per_layer"]`` keeps each layer's own raw map; targets, scores and outputs are the
    first part's (every layer sees the same model output)."""
    nd = len(size)  # 3 for volumes (N, d, h, w): trilinear, each volume scaled as one map
    scaled = [resize(minmax(np.maximum(np.nan_to_num(p.raw.astype(np.float32)), 0), ndim=nd), size) for p in parts]
    mean = np.mean(scaled, axis=0).astype(np.float32)
    first = parts[0]
    meta = dict(first.meta, raw_per_layer={p.layer: p.raw for p in parts})
    return dataclasses.replace(first, heatmap=minmax(np.maximum(mean, 0), ndim=nd), raw=mean,
                               layer=" + ".join(p.layer for p in parts), meta=meta)


def product_layers(parts: list[Explanation], size: tuple[int, int]) -> Explanation:
    """RefineCAM's combination (pytorch-grad-cam 1.5.7): the product of the layers' heatmaps
    (N, H, W), min-max scaled. ``raw`` is the product before scaling."""
    prod = np.prod([resize(p.heatmap, size) for p in parts], axis=0).astype(np.float32)
    first = parts[0]
    meta = dict(first.meta, raw_per_layer={p.layer: p.raw for p in parts})
    return dataclasses.replace(first, heatmap=minmax(prod, eps=1e-7, ndim=len(size)), raw=prod,
                               layer=" * ".join(p.layer for p in parts), meta=meta)


def _merge(values: list, parts: list[Explanation], order: np.ndarray, n: int):
    """Per-image arrays (first dim = that part's image count) concatenated and put back in image order;
    anything else: the first part's value (None when any part has None)."""
    if any(v is None for v in values):
        return None
    if all(isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == len(p) for v, p in zip(values, parts)):
        if len({v.shape[1:] for v in values}) == 1:
            cat = np.concatenate(values, axis=0)
            out = np.empty_like(cat)
            out[order] = cat
            return out
    return values[0]


def stitch(parts: list[tuple[np.ndarray, Explanation]], n: int) -> Explanation:
    """One explanation of ``n`` images from explanations of disjoint groups ``(indices, explanation)``.

    Class indices of groups explained by a callable target are -1 in ``targets``."""
    order = np.concatenate([idx for idx, _ in parts])
    exps = [e for _, e in parts]
    fixed = [e if e.targets is not None else dataclasses.replace(e, targets=np.full(len(e), -1, np.int64)) for e in exps]
    fields = {f.name: _merge([getattr(e, f.name) for e in fixed], fixed, order, n)
              for f in dataclasses.fields(Explanation) if f.name != "meta"}
    meta = dict(exps[0].meta, groups=[idx for idx, _ in parts])
    return Explanation(**fields, meta=meta)
