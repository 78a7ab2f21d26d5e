"""Robustness metrics: does the map stay put when the input barely moves? **Lower is better** for all.

Each explains ``nr_samples`` noisy copies of every image with the same method and target and
compares the maps. The copies of all images and of as many draws as fit in ``rows`` (default
:data:`ROWS`) go through one batched ``ex.explain`` call, so the per-call work (checks, target
resolution, exports) is paid once per ``rows`` copies rather than once per draw; the draws are made
in the same order either way, so the scores do not depend on ``rows``.
Named as Quantus's classes, same formulas. ``explainer`` is an :class:`~agnostic_cam.Explainer`
(any framework); ``method`` and ``options`` go to ``explainer.explain``; ``targets`` None explains
each image's top-1 class on the clean image, in every noisy copy. ``noise`` (nr_samples, N, ...)
in the images' shape replaces the draws from ``rng`` (a Generator or seed), so a comparison can
share the exact perturbations.
"""
from __future__ import annotations

import warnings

import numpy as np

from agnostic_cam.core.degenerate import DegenerateMapWarning
from agnostic_cam.errors import InputError
from agnostic_cam.evaluation import perturb as P


ROWS = 64  # noisy copies explained per call (all images of a draw always go together)


def _maps_of(ex, method: str, options: dict):
    def run(xs: np.ndarray, t: list[int]) -> np.ndarray:
        with warnings.catch_warnings():  # a noisy copy may well give a flat map; it still counts
            warnings.simplefilter("ignore", DegenerateMapWarning)
            return np.asarray(ex.explain(xs, method, target=t, **options).heatmap, np.float64)
    return run


def _noisy(ex, images, maps, method, targets, nr_samples, noise, draw, options):
    """Yields (clean maps (N, HW), noisy maps (N, HW), clean images flat, noisy images flat) per draw."""
    options = dict(options)
    rows = P.check_int("rows", options.pop("rows", ROWS))
    x = ex._inputs(images)
    x, layout, hw = P.check_images(x, ex.adapter.layout)
    m = P.check_maps(maps, x.shape[0], hw).reshape(x.shape[0], -1)
    t = [int(c) for c in ex.predict(x).argmax(axis=1)] if targets is None else \
        [int(v) for v in np.broadcast_to(np.asarray(targets, np.int64), (x.shape[0],))]
    explain = _maps_of(ex, method, options)
    if noise is not None:
        noise = np.asarray(noise)
        if noise.shape[1:] != x.shape:
            raise InputError(f"noise must be (nr_samples, *images.shape) = (S, {', '.join(map(str, x.shape))}); got {noise.shape}")
        draws = iter(noise)
        count = noise.shape[0]
    else:
        count = P.check_int("nr_samples", nr_samples)
        draws = (draw(x.shape) for _ in range(count))
    n, per_call = x.shape[0], max(1, rows // x.shape[0])
    group: list[np.ndarray] = []
    for k, e in enumerate(draws, 1):
        group.append((x + e).astype(np.float32))
        if len(group) < per_call and k < count:
            continue
        got = explain(np.concatenate(group), t * len(group)).reshape(len(group), n, -1)
        for xp, mp in zip(group, got):
            yield m, mp, x.reshape(n, -1), xp.reshape(n, -1)
        group = []


def _sensitivity(ex, images, maps, method, targets, nr_samples, radius, noise, rng, options) -> np.ndarray:
    g = P.generator(rng)
    draw = lambda shape: g.uniform(-radius, radius, size=shape)  # noqa: E731
    rows = [np.linalg.norm(m - mp, axis=1) / np.linalg.norm(m, axis=1)
            for m, mp, _, _ in _noisy(ex, images, maps, method, targets, nr_samples, noise, draw, options)]
    return np.stack(rows, 1)


def max_sensitivity(explainer, images, maps, method: str = "gradcam", targets=None, nr_samples: int = 200,
                    radius: float = 0.2, noise=None, rng=None, **options) -> np.ndarray:
    """(N,) largest relative change of the map, ||map' - map||_F / ||map||_F, over ``nr_samples``
    copies of the image with uniform noise in [-radius, radius] on every value (Yeh et al. 2019).
    **Lower is better.** Cost: nr_samples explanations per image."""
    return np.nanmax(_sensitivity(explainer, images, maps, method, targets, nr_samples, radius, noise, rng, options), 1)


def avg_sensitivity(explainer, images, maps, method: str = "gradcam", targets=None, nr_samples: int = 200,
                    radius: float = 0.2, noise=None, rng=None, **options) -> np.ndarray:
    """(N,) mean relative change of the map, as :func:`max_sensitivity` (Yeh et al. 2019).
    **Lower is better.**"""
    return np.nanmean(_sensitivity(explainer, images, maps, method, targets, nr_samples, radius, noise, rng, options), 1)


def local_lipschitz_estimate(explainer, images, maps, method: str = "gradcam", targets=None, nr_samples: int = 200,
                             std: float = 0.1, noise=None, rng=None, **options) -> np.ndarray:
    """(N,) largest ||map' - map||_2 / (||x' - x||_2 + 1e-10) over ``nr_samples`` copies x' = x + N(0, std^2)
    noise (Alvarez-Melis & Jaakkola 2018). **Lower is better.** Cost: nr_samples explanations per image."""
    g = P.generator(rng)
    draw = lambda shape: g.normal(0.0, std, size=shape)  # noqa: E731
    rows = [np.linalg.norm(m - mp, axis=1) / (np.linalg.norm(xf.astype(np.float64) - xp, axis=1) + 1e-10)
            for m, mp, xf, xp in _noisy(explainer, images, maps, method, targets, nr_samples, noise, draw, options)]
    return np.nanmax(np.stack(rows, 1), 1)
