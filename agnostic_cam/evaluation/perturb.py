"""Shared machinery of the metric suite: checked inputs, Quantus-style baselines, batched scoring.

A *job* is one perturbed copy of one image: a boolean pixel mask (H, W) of the pixels replaced and
the values they get (a per-image number or an image-shaped array). :func:`run_jobs` builds the
perturbed images ``batch_size`` at a time and scores them on ONNX Runtime through
:func:`~agnostic_cam.evaluation.metrics.as_forward`, so every metric costs forward passes only and
serves every framework. Every channel of a pixel moves together (a pixel is one feature).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.evaluation.metrics import _score, as_forward
from agnostic_cam.targets import for_rows

Perturb = Callable[[int, int], tuple]  # (image i, step k) -> (mask (H, W) bool, fill)


def check_maps(maps, n: int | None = None, hw: tuple | None = None) -> np.ndarray:
    """``maps`` as float64 (N, H, W); InputError naming the expected shape otherwise."""
    m = np.asarray(maps, np.float64)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise InputError(f"maps must be (N, H, W) (e.g. Explanation.heatmap); got shape {m.shape}")
    if n is not None and hw is not None and m.shape != (n, *hw):
        raise InputError(f"maps must be (N, H, W) = {(n, *hw)} to match the images; got {m.shape}. "
                         "Use Explanation.heatmap (input resolution)")
    return m


def check_masks(masks, shape: tuple) -> np.ndarray:
    """``masks`` as bool (N, H, W) matching the maps' ``shape``."""
    s = np.asarray(masks)
    if s.ndim == 4 and s.shape[1] == 1:
        s = s[:, 0]
    if s.shape != tuple(shape):
        raise InputError(f"masks must be boolean (N, H, W) = {tuple(shape)}, one object mask per map; got {s.shape}. "
                         "Boxes become masks with agnostic_cam.evaluation.localisation.boxes_to_masks")
    return s.astype(bool)


def check_images(images, layout: str) -> tuple[np.ndarray, str, tuple]:
    """(images float32 (N, ...), layout, (H, W))."""
    x = np.asarray(images, np.float32)
    layout = L.image_layout(layout)
    if x.ndim != 4:
        raise InputError(f"images must be a batch (N, C, H, W) or (N, H, W, C); got shape {x.shape}")
    return x, layout, L.spatial_size(x.shape, layout)


def fill_values(x: np.ndarray, baseline, rng: np.random.Generator | None = None) -> np.ndarray:
    """Per-image replacement values (N,) for a named baseline, as Quantus names them:
    'black' (the image's minimum), 'white' (its maximum), 'mean' (its mean), 'zero', 'uniform'
    (one U(0, 1) value per image, from ``rng``), or a number."""
    flat = x.reshape(x.shape[0], -1)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return np.full(x.shape[0], float(baseline))
    named = {"black": lambda: flat.min(1), "white": lambda: flat.max(1), "mean": lambda: flat.mean(1),
             "zero": lambda: np.zeros(x.shape[0])}
    if baseline in named:
        return named[baseline]().astype(np.float64)
    if baseline == "uniform":
        return generator(rng).uniform(0.0, 1.0, x.shape[0])
    raise OptionError(f"baseline must be 'black', 'white', 'mean', 'zero', 'uniform' or a number; got {baseline!r}")


def model_targets(model, x: np.ndarray, targets, batch_size: int) -> tuple[Callable, np.ndarray, Callable | None]:
    """(forward, class per image (N,), task target or None). None targets: each image's top-1 class."""
    fwd = as_forward(model)
    if callable(targets):
        return fwd, np.zeros(x.shape[0], np.int64), targets
    if targets is None:
        out = np.concatenate([fwd(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        return fwd, out.argmax(axis=1).astype(np.int64), None
    t = np.broadcast_to(np.asarray(targets, np.int64), (x.shape[0],)).copy()
    return fwd, t, None


def scores_of(out: np.ndarray, rows: np.ndarray, t: np.ndarray, task, score: str) -> np.ndarray:
    """Target scores of model outputs ``out`` whose rows belong to images ``rows``."""
    if task is not None:
        return np.asarray(for_rows(task, rows)(out), np.float64).reshape(-1)
    return _score(out, t[rows], score)


def predict_scores(fwd, x: np.ndarray, t: np.ndarray, task, score: str, batch_size: int) -> np.ndarray:
    """(N,) target scores of the unperturbed images."""
    rows = np.arange(x.shape[0])
    return np.concatenate([scores_of(fwd(x[i:i + batch_size]), rows[i:i + batch_size], t, task, score)
                           for i in range(0, x.shape[0], batch_size)])


def run_jobs(fwd, x: np.ndarray, layout: str, jobs: Sequence[tuple[int, int]], perturb: Perturb,
             t: np.ndarray, task, score: str, batch_size: int) -> np.ndarray:
    """Scores (len(jobs),) of the perturbed images ``perturb(i, k)`` for jobs (i, k), batched."""
    out = np.empty(len(jobs))
    for lo in range(0, len(jobs), batch_size):
        chunk = jobs[lo:lo + batch_size]
        rows = np.array([i for i, _ in chunk], np.int64)
        batch = np.empty((len(chunk), *x.shape[1:]), np.float32)
        for j, (i, k) in enumerate(chunk):
            mask, fill = perturb(i, k)
            m = L.expand_mask(np.asarray(mask, bool)[None], layout)[0]
            batch[j] = np.where(m, np.asarray(fill, np.float64), x[i])
        out[lo:lo + len(chunk)] = scores_of(fwd(batch), rows, t, task, score)
    return out


def order_desc(m: np.ndarray) -> np.ndarray:
    """(N, H*W) pixel indices by decreasing map value, ties by position."""
    return np.argsort(-m.reshape(m.shape[0], -1), axis=1, kind="stable")


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair (NaN where a row is constant)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((a * b).sum(1) / den, -1.0, 1.0)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair: Pearson of the average ranks."""
    from scipy.stats import rankdata

    return pearson_rows(rankdata(a, axis=1), rankdata(b, axis=1))


def check_int(name: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise OptionError(f"{name} must be an int >= {low}; got {v!r}")
    return int(v)


def generator(rng) -> np.random.Generator:
    """``rng`` as a numpy Generator: a Generator, a seed, or None (seed 0, reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(0 if rng is None else int(rng))
    raise OptionError(f"rng must be a numpy.random.Generator or an int seed; got {type(rng).__name__}")
