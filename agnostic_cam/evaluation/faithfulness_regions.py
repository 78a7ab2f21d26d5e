"""Faithfulness over regions, and sufficiency: IROF, infidelity (Quantus's patch form), sufficiency.

Arguments as in :mod:`agnostic_cam.evaluation.faithfulness` (``model``, ``images`` in the model's
layout, ``maps`` (N, H, W), ``targets``, ``baseline``, ``score``); forward passes only, batched on
ONNX Runtime. Named as Quantus's classes, same formulas.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.engine.threads import blas_one_thread
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.evaluation import perturb as P
from agnostic_cam.evaluation.faithfulness import _patches, _setup


def slic_segments(images, layout: str = "NCHW") -> np.ndarray:
    """(N, H, W) SLIC superpixels, labels from 0 (scikit-image's ``slic(image, start_label=0)``, the
    segmentation Quantus's IROF uses). Needs scikit-image."""
    try:
        from skimage.segmentation import slic
    except ImportError as e:
        raise OptionError("IROF's default superpixels need scikit-image (pip install scikit-image); "
                          "or pass segments=(N, H, W) integer labels") from e
    x, layout, _ = P.check_images(images, layout)
    hwc = np.moveaxis(x, 1, -1) if layout == "NCHW" else x
    return np.stack([slic(img.astype("double"), start_label=0) for img in hwc])


@blas_one_thread()
def irof(model, images, maps, targets=None, segments=None, baseline="mean", layout: str = "NCHW",
         score: str = "softmax", batch_size: int = 64) -> np.ndarray:
    """(N,) IROF, Iterative Removal Of Features (Rieger & Hansen 2020): superpixels ``segments``
    (N, H, W) integer labels 0 .. S-1 (default :func:`slic_segments`) are set to ``baseline``
    one more at a time in decreasing mean map value; the score relative to the original, y_k / y,
    traces a curve over k = 1 .. S whose area *over* it, S - trapezoid(y_k / y), is the result.
    **Higher is better.** Cost: S passes per image. ``baseline`` 'mean' is each image's mean
    (Quantus's 'mean' is the mean over the whole, already perturbed batch)."""
    x, layout, hw, m, fwd, t, task = _setup(model, images, maps, targets, layout, batch_size)
    seg = slic_segments(x, layout) if segments is None else np.asarray(segments)
    if seg.shape != m.shape or not np.issubdtype(seg.dtype, np.integer):
        raise InputError(f"segments must be integer labels (N, H, W) = {m.shape}; got {seg.dtype} {seg.shape}")
    n, fill = x.shape[0], P.fill_values(x, baseline)
    orders = []
    for mi, si in zip(m, seg):
        labels = np.arange(int(si.max()) + 1)
        means = np.array([mi[si == s].mean() if (si == s).any() else -np.inf for s in labels])
        orders.append(np.argsort(-means))
    y = P.predict_scores(fwd, x, t, task, score, batch_size)
    perturb = lambda i, k: (np.isin(seg[i], orders[i][:k + 1]), fill[i])  # noqa: E731
    jobs = [(i, k) for i in range(n) for k in range(len(orders[i]))]
    s = P.run_jobs(fwd, x, layout, jobs, perturb, t, task, score, batch_size)
    out, lo = np.empty(n), 0
    for i in range(n):
        c = s[lo:lo + len(orders[i])] / y[i]
        lo += len(orders[i])
        out[i] = len(c) - ((c[1:] + c[:-1]).sum() / 2 if len(c) > 1 else 0.0)
    return out


@blas_one_thread()
def infidelity(model, images, maps, targets=None, patch_sizes=(4,), baseline="black", n_perturb_samples: int = 1,
               rng=None, layout: str = "NCHW", score: str = "raw", batch_size: int = 64) -> np.ndarray:
    """(N,) infidelity (Yeh et al. 2019) in Quantus's form: ``patch_size`` patches are set to
    ``baseline`` one more at a time in raster order; at each step the score's drop y - y_k is
    compared with the map's prediction of it, sum(map * (x - x_k)) (channels summed), and the mean
    squared error over the steps is averaged over ``patch_sizes`` and ``n_perturb_samples`` draws
    (draws differ only for a random ``baseline`` such as 'uniform', from ``rng``). **Lower is better.**"""
    x, layout, hw, m, fwd, t, task = _setup(model, images, maps, targets, layout, batch_size)
    n, g = x.shape[0], P.generator(rng)
    y = P.predict_scores(fwd, x, t, task, score, batch_size)
    chan = L.channel_axis(layout)
    total = np.zeros(n)
    for _ in range(P.check_int("n_perturb_samples", n_perturb_samples)):
        per_size = []
        for size in patch_sizes:
            patches = _patches(hw, P.check_int("patch_size", size))
            fill = P.fill_values(x, baseline, g)

            def cum(k):
                mask = np.zeros(hw, bool)
                for p in patches[:k + 1]:
                    mask[p] = True
                return mask

            masks = [cum(k) for k in range(len(patches))]
            s = P.run_jobs(fwd, x, layout, [(i, k) for i in range(n) for k in range(len(patches))],
                           lambda i, k: (masks[k], fill[i]), t, task, score, batch_size).reshape(n, -1)
            diff = (x.astype(np.float64) - fill[:, None, None, None]).sum(axis=chan)  # (N, H, W) per-pixel channel sum
            pred = np.stack([(m * diff * mk).sum((1, 2)) for mk in masks], 1)
            per_size.append((((y[:, None] - s) - pred) ** 2).mean(1))
        total += np.mean(per_size, axis=0)
    return total / n_perturb_samples


def sufficiency(model, images, maps, threshold: float = 0.6, layout: str = "NCHW", batch_size: int = 64) -> np.ndarray:
    """(N,) sufficiency (Dasgupta et al. 2022): among the other images whose maps lie within
    ``threshold`` of this one's (standardised Euclidean distance between |maps|, divided by the
    largest such distance in the set), the share predicted as the same class. **Higher is better.**
    Pixels constant over the set carry no distance (Quantus returns NaN there)."""
    x, layout, hw = P.check_images(images, layout)
    a = np.abs(P.check_maps(maps, x.shape[0], hw)).reshape(x.shape[0], -1)
    fwd = P.as_forward(model)
    cls = np.concatenate([fwd(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]).argmax(1)
    var = a.var(0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1])
    keep = var > 0
    d = np.sqrt((((a[:, None, keep] - a[None, :, keep]) ** 2) / var[keep]).sum(-1))
    if d.max() > 0:
        d = d / d.max()
    near = (d <= threshold) & ~np.eye(len(a), dtype=bool)
    same = cls[None] == cls[:, None]
    cnt = near.sum(1)
    return np.where(cnt == 0, 0.0, (near & same).sum(1) / np.maximum(cnt, 1))
