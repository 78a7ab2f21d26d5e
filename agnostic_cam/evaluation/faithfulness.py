"""Faithfulness metrics: does removing what the map calls important change the model's score?

Named as Quantus's classes, same formulas; forward passes only, batched on ONNX Runtime through the
explainer (:func:`~agnostic_cam.evaluation.metrics.as_forward`), for any framework.

Common arguments: ``model`` an Explainer, OnnxEngine or callable batch -> outputs (N, K);
``images`` in the model's layout; ``maps`` (N, H, W); ``targets`` None (top-1), class indices or a
task target; ``score`` 'raw' (the outputs as they are, logits) or 'softmax'; each metric's default is Quantus's
(softmax for pixel flipping, region perturbation, monotonicity correlation and IROF).
A *feature* is a pixel: all its channels move together (Quantus counts channel elements, so its
``features_in_step`` is C x ``pixels_in_step`` here). ``baseline`` names the value removed pixels
get, as Quantus does: 'black' (each image's minimum), 'white', 'mean', 'zero', 'uniform' or a number.
"""
from __future__ import annotations

import math

import numpy as np

from agnostic_cam.engine.threads import blas_one_thread
from agnostic_cam.errors import OptionError
from agnostic_cam.evaluation import perturb as P


def _setup(model, images, maps, targets, layout, batch_size):
    x, layout, hw = P.check_images(images, layout)
    m = P.check_maps(maps, x.shape[0], hw)
    fwd, t, task = P.model_targets(model, x, targets, batch_size)
    return x, layout, hw, m, fwd, t, task


def _steps(hw: tuple, pixels_in_step: int) -> int:
    return math.ceil(hw[0] * hw[1] / P.check_int("pixels_in_step", pixels_in_step))


@blas_one_thread()
def faithfulness_correlation(model, images, maps, targets=None, nr_runs: int = 100, subset_size: int = 224,
                             baseline="black", subsets=None, rng=None, layout: str = "NCHW", score: str = "raw",
                             batch_size: int = 64) -> np.ndarray:
    """(N,) Pearson correlation, over ``nr_runs`` random pixel subsets of ``subset_size``, between the
    map's sum over the subset and the score's drop when the subset is set to ``baseline``
    (Bhatt et al. 2020). **Higher is better.** ``subsets`` (nr_runs, N, subset_size) pixel indices
    (row-major in H x W) replace the draws from ``rng`` (a Generator or seed)."""
    x, layout, hw, m, fwd, t, task = _setup(model, images, maps, targets, layout, batch_size)
    n, d = x.shape[0], hw[0] * hw[1]
    g = P.generator(rng)
    if subsets is None:
        runs = P.check_int("nr_runs", nr_runs)
        subsets = np.stack([[g.choice(d, P.check_int("subset_size", subset_size), replace=False) for _ in range(n)]
                            for _ in range(runs)])
    subsets = np.asarray(subsets, np.int64)
    fill = P.fill_values(x, baseline, g)
    y = P.predict_scores(fwd, x, t, task, score, batch_size)

    def perturb(i, r):
        mask = np.zeros(d, bool)
        mask[subsets[r, i]] = True
        return mask.reshape(hw), fill[i]

    jobs = [(i, r) for r in range(subsets.shape[0]) for i in range(n)]
    s = P.run_jobs(fwd, x, layout, jobs, perturb, t, task, score, batch_size).reshape(subsets.shape[0], n).T
    flat = m.reshape(n, -1)
    att = np.stack([flat[np.arange(n)[:, None], subsets[r]].sum(1) for r in range(subsets.shape[0])], 1)
    return P.pearson_rows(att, y[:, None] - s)


@blas_one_thread()
def faithfulness_estimate(model, images, maps, targets=None, pixels_in_step: int = 1, baseline="black",
                          layout: str = "NCHW", score: str = "raw", batch_size: int = 64) -> np.ndarray:
    """(N,) Pearson correlation between the map's sum over each group of ``pixels_in_step`` pixels
    (in decreasing map order) and the score's drop when only that group is set to ``baseline``
    (Alvarez-Melis & Jaakkola 2018). **Higher is better.** Cost: H*W / pixels_in_step passes per image."""
    x, layout, hw, m, fwd, t, task = _setup(model, images, maps, targets, layout, batch_size)
    n, k = x.shape[0], _steps(hw, pixels_in_step)
    order, fill = P.order_desc(m), P.fill_values(x, baseline)
    y = P.predict_scores(fwd, x, t, task, score, batch_size)

    def perturb(i, j):
        mask = np.zeros(hw[0] * hw[1], bool)
        mask[order[i, j * pixels_in_step:(j + 1) * pixels_in_step]] = True
        return mask.reshape(hw), fill[i]

    s = P.run_jobs(fwd, x, layout, [(i, j) for i in range(n) for j in range(k)], perturb, t, task, score,
                   batch_size).reshape(n, k)
    flat = m.reshape(n, -1)
    att = np.stack([flat[np.arange(n)[:, None], order[:, j * pixels_in_step:(j + 1) * pixels_in_step]].sum(1)
                    for j in range(k)], 1)
    return P.pearson_rows(att, y[:, None] - s)


@blas_one_thread()
def monotonicity_correlation(model, images, maps, targets=None, pixels_in_step: int = 1, nr_samples: int = 100,
                             baseline="uniform", fills=None, eps: float = 1e-5, rng=None, layout: str = "NCHW",
                             score: str = "softmax", batch_size: int = 64) -> np.ndarray:
    """(N,) Spearman correlation between the map's sum over each group of ``pixels_in_step`` pixels
    (increasing map order) and the mean squared change of the score, over ``nr_samples`` draws of
    the ``baseline`` for that group, divided by the squared score (Nguyen & Martinez 2020).
    **Higher is better.** ``fills`` (steps, nr_samples, N) replacement values replace the draws
    (default 'uniform': one U(0, 1) value per image and draw, from ``rng``).
    Cost: nr_samples * H*W / pixels_in_step passes per image."""
    x, layout, hw, m, fwd, t, task = _setup(model, images, maps, targets, layout, batch_size)
    n, k = x.shape[0], _steps(hw, pixels_in_step)
    samples = P.check_int("nr_samples", nr_samples)
    order = np.argsort(m.reshape(n, -1), axis=1, kind="stable")
    if fills is None:
        g = P.generator(rng)
        fills = np.stack([[P.fill_values(x, baseline, g) for _ in range(samples)] for _ in range(k)])
    fills = np.asarray(fills, np.float64)
    y = P.predict_scores(fwd, x, t, task, score, batch_size)
    inv = np.where(np.abs(y) >= eps, 1.0 / np.where(y == 0, 1, np.abs(y)), 1.0) ** 2

    def perturb(i, job):
        j, r = divmod(job, samples)
        mask = np.zeros(hw[0] * hw[1], bool)
        mask[order[i, j * pixels_in_step:(j + 1) * pixels_in_step]] = True
        return mask.reshape(hw), fills[j, r, i]

    jobs = [(i, q) for i in range(n) for q in range(k * samples)]
    s = P.run_jobs(fwd, x, layout, jobs, perturb, t, task, score, batch_size).reshape(n, k, samples)
    var = ((s - y[:, None, None]) ** 2).mean(2) * inv[:, None]
    flat = m.reshape(n, -1)
    att = np.stack([flat[np.arange(n)[:, None], order[:, j * pixels_in_step:(j + 1) * pixels_in_step]].sum(1)
                    for j in range(k)], 1)
    return P.spearman_rows(att, var)


@blas_one_thread()
def pixel_flipping_curve(model, images, maps, targets=None, pixels_in_step: int = 1, baseline="black",
                         layout: str = "NCHW", score: str = "softmax", batch_size: int = 64) -> np.ndarray:
    """(N, steps) score after the (k + 1) * ``pixels_in_step`` highest-valued pixels are set to
    ``baseline`` (cumulative), k = 0 .. steps - 1 (Bach et al. 2015)."""
    x, layout, hw, m, fwd, t, task = _setup(model, images, maps, targets, layout, batch_size)
    n, k = x.shape[0], _steps(hw, pixels_in_step)
    order, fill = P.order_desc(m), P.fill_values(x, baseline)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None].repeat(n, 0), axis=1)
    perturb = lambda i, j: ((rank[i] < (j + 1) * pixels_in_step).reshape(hw), fill[i])  # noqa: E731
    return P.run_jobs(fwd, x, layout, [(i, j) for i in range(n) for j in range(k)], perturb, t, task, score,
                      batch_size).reshape(n, k)


def pixel_flipping(model, images, maps, targets=None, **kw) -> np.ndarray:
    """(N,) area under :func:`pixel_flipping_curve` (trapezoid, unit step: Quantus's
    ``return_auc_per_sample``). **Lower is better** (the score falls fast)."""
    c = pixel_flipping_curve(model, images, maps, targets, **kw)
    return (c[:, 1:] + c[:, :-1]).sum(1) / 2


def _patches(hw: tuple, size: int) -> list[tuple[slice, slice]]:
    """A grid of ``size`` x ``size`` patches covering (H, W), centred as Quantus pads: the first
    patch row/column is cut by floor(pad / 2) where H or W is not a multiple of ``size``."""
    out = []
    oy, ox = [(-(d % size) % size) // 2 if d % size else 0 for d in hw]
    for y in range(-oy, hw[0], size):
        for x in range(-ox, hw[1], size):
            out.append((slice(max(0, y), y + size), slice(max(0, x), x + size)))
    return out


@blas_one_thread()
def region_perturbation_curve(model, images, maps, targets=None, patch_size: int = 8, order: str = "morf",
                              regions_evaluation: int = 100, baseline="black", rng=None, layout: str = "NCHW",
                              score: str = "softmax", batch_size: int = 64) -> np.ndarray:
    """(N, L) score drop y - y_k after the k most relevant ``patch_size`` patches (by the map's sum,
    'morf'; 'lerf' least first; 'random') are set to ``baseline``, k = 1 .. L = min(regions_evaluation,
    patches) (Samek et al. 2016)."""
    x, layout, hw, m, fwd, t, task = _setup(model, images, maps, targets, layout, batch_size)
    n, patches = x.shape[0], _patches(hw, P.check_int("patch_size", patch_size))
    sums = np.stack([m[:, ys, xs].sum((1, 2)) for ys, xs in patches], 1)
    if order == "morf":
        rank = np.argsort(-sums, axis=1)
    elif order == "lerf":
        rank = np.argsort(sums, axis=1)
    elif order == "random":
        g = P.generator(rng)
        rank = np.stack([g.permutation(len(patches)) for _ in range(n)])
    else:
        raise OptionError(f"order must be 'morf' (most relevant first), 'lerf' or 'random'; got {order!r}")
    steps, fill = min(P.check_int("regions_evaluation", regions_evaluation), len(patches)), P.fill_values(x, baseline)
    y = P.predict_scores(fwd, x, t, task, score, batch_size)

    def perturb(i, j):
        mask = np.zeros(hw, bool)
        for p in rank[i, :j + 1]:
            mask[patches[p]] = True
        return mask, fill[i]

    s = P.run_jobs(fwd, x, layout, [(i, j) for i in range(n) for j in range(steps)], perturb, t, task, score,
                   batch_size).reshape(n, steps)
    return y[:, None] - s


def region_perturbation(model, images, maps, targets=None, **kw) -> np.ndarray:
    """(N,) AOPC, the mean of :func:`region_perturbation_curve` with its k = 0 term (0):
    sum / (L + 1). With 'morf', **higher is better**."""
    c = region_perturbation_curve(model, images, maps, targets, **kw)
    return c.sum(1) / (c.shape[1] + 1)
