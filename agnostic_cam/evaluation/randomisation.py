"""Randomisation metrics: does the map depend on what it claims to explain? **Lower is better** for both.

- :func:`random_logit` (Sixt et al. 2020): the map of the explained class against the map of a
  random other class; a map that stays the same does not explain the class.
- :func:`smooth_mprt` (Hedström et al. 2024, "Sanity checks revisited"): the cascading model
  parameter randomisation test (:func:`agnostic_cam.evaluation.sanity.model_randomization`, Adebayo et
  al. 2018) on maps averaged over noisy copies of the input, which removes the shattered-gradient
  noise that makes plain MPRT misjudge gradient methods.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from agnostic_cam.core.degenerate import DegenerateMapWarning
from agnostic_cam.errors import InputError
from agnostic_cam.evaluation import perturb as P
from agnostic_cam.evaluation.sanity import SanityResult, model_randomization
from agnostic_cam.evaluation.similarity import ssim


def random_logit(explainer, images, maps, method: str = "gradcam", targets=None, num_classes: int | None = None,
                 off_targets=None, similarity: Callable | None = None, rng=None, **options) -> np.ndarray:
    """(N,) similarity of each map to the map of a random other class: one of the ``num_classes``
    (default: the model's output size) other than the explained one, drawn uniformly from ``rng``
    (or given as ``off_targets``). ``similarity(a, b) -> float`` on two (H, W) maps, default
    :func:`~agnostic_cam.evaluation.similarity.ssim` (Quantus's default too). **Lower is better.**"""
    x = explainer._inputs(images)
    m = P.check_maps(maps)
    if m.shape[0] != x.shape[0]:
        raise InputError(f"got {m.shape[0]} maps for {x.shape[0]} images; pass one map per image")
    out = explainer.predict(x)
    t = out.argmax(1) if targets is None else np.broadcast_to(np.asarray(targets, np.int64), (x.shape[0],))
    if off_targets is None:
        k = int(num_classes or out.shape[1])
        draw = P.generator(rng).integers(0, k - 1, x.shape[0])  # an index among the k - 1 other classes
        off_targets = draw + (draw >= t)
    off = [int(v) for v in np.broadcast_to(np.asarray(off_targets, np.int64), (x.shape[0],))]
    if any(o == int(c) for o, c in zip(off, t)):
        raise InputError("off_targets must differ from the explained classes, image by image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMapWarning)
        other = np.asarray(explainer.explain(x, method, target=off, **options).heatmap, np.float64)
    sim = similarity or ssim
    return np.array([float(sim(a, b)) for a, b in zip(m, other)])


def smoothed(method: str = "gradcam", nr_samples: int = 50, noise_magnitude: float = 0.1, rng=None,
             target=None, **options) -> Callable:
    """A map function ``(explainer, images) -> (N, H, W)``: the mean of ``method``'s heatmaps over
    ``nr_samples`` copies of the images, the last one clean and the others with Gaussian noise of
    std ``noise_magnitude`` x (max - min) of each image (SmoothMPRT's denoising). Every model sees
    the same noise (the draws are made once, on first use)."""
    cache: dict = {}
    g = P.generator(rng)
    count = P.check_int("nr_samples", nr_samples)

    def run(ex, x):
        x = np.asarray(x, np.float32)
        if "noise" not in cache:
            span = (x.reshape(len(x), -1).max(1) - x.reshape(len(x), -1).min(1)).reshape(-1, *[1] * (x.ndim - 1))
            cache["noise"] = [g.standard_normal(x.shape) * noise_magnitude * span for _ in range(count - 1)] + \
                             [np.zeros(x.shape)]
        total = 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateMapWarning)
            for e in cache["noise"]:
                total = total + ex.explain((x + e).astype(np.float32), method, target=target, **options).heatmap
        return (total / count).astype(np.float32)

    run.__name__ = f"smooth {method}"
    return run


def smooth_mprt(explainer, images, method: str = "gradcam", target=None, nr_samples: int = 50,
                noise_magnitude: float = 0.1, steps: int | None = None, seed: int = 0, rng=None,
                **options) -> SanityResult:
    """Smooth MPRT: :func:`~agnostic_cam.evaluation.sanity.model_randomization` of the
    :func:`smoothed` maps. ``result.spearman[-1]`` (N,) is the Spearman correlation of each image's
    map once every layer is randomised: **lower is better** (the map depends on the weights).
    target None explains each image's top-1 class of the original model, in every model."""
    x = explainer._inputs(images)
    if target is None:
        target = [int(c) for c in explainer.predict(x).argmax(axis=1)]
    fn = smoothed(method, nr_samples, noise_magnitude, rng, target=target, **options)
    return model_randomization(explainer, x, method=fn, target=target, steps=steps, seed=seed)
