"""Class model visualisation (Simonyan, Vedaldi & Zisserman 2014, section 2, eq. 1).

``I* = argmax_I S_c(I) - lambda ||I||^2``: the image that maximises the unnormalised score of
class ``c`` (the logit), here with the jitter and blur regularisers of Yosinski et al. 2015 on
top. The gradient of ``S_c`` w.r.t. the output is the one-hot vector of ``c``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agnostic_cam.features.common import start_images
from agnostic_cam.features.optimise import Callback, ascend, ascent_settings
from agnostic_cam.features.result import Visualisation
from agnostic_cam.errors import InputError, ModelError

DEFAULTS = {"steps": 100, "lr": 0.05, "normalise": True, "l2": 0.1, "tv": 0.3, "jitter": 2, "blur_sigma": 0.3, "blur_every": 4}


def one_hot_rows(out: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N, K) cotangent with 1 at ``targets[n]`` in row n; checks the classes exist."""
    if out.ndim != 2:
        raise ModelError(f"the model output has shape {out.shape}; class models need scores (N, K)")
    if targets.max() >= out.shape[1]:
        raise InputError(f"target {int(targets.max())} out of range: the model has {out.shape[1]} outputs (0..{out.shape[1] - 1})")
    cot = np.zeros_like(out)
    cot[np.arange(out.shape[0]), targets] = 1.0
    return cot


def class_model(adapter, target: int | Sequence[int], shape: tuple[int, ...] | None = None, seed: int = 0,
                init: np.ndarray | None = None, init_std: float = 0.1, progress: bool | None = None,
                callback: Callback | None = None, **options) -> Visualisation:
    """One image per target class (N = number of targets), in the model's layout.

    shape: one image's shape (needed when the adapter does not know the input size). init: start
    images (N, ...) instead of seeded noise N(0, init_std^2). ``options``: see
    :class:`~agnostic_cam.features.optimise.Ascent` (defaults: ``DEFAULTS``).
    history: (steps, N) the target scores before each step; meta['scores']: (N, K) all scores of
    the final images, meta['start_scores'] those of the start images.
    """
    targets = np.atleast_1d(np.asarray(target))
    if targets.ndim != 1 or targets.size == 0 or not np.issubdtype(targets.dtype, np.integer) or targets.min() < 0:
        raise InputError(f"target must be a class index or a list of them (ints >= 0); got {target!r}")
    settings = ascent_settings(DEFAULTS, options, "class_model")
    n = len(targets)
    x0 = start_images(adapter, n, init, shape, seed, init_std, "target")
    rows = np.arange(n)

    def grad_fn(x: np.ndarray):
        out, g = adapter.vjp(x, None, lambda o: one_hot_rows(o, targets), rule="vanilla")
        return out[rows, targets], g

    start, _ = adapter.vjp(x0, None, lambda o: np.zeros_like(o))
    x, history = ascend(x0, grad_fn, settings, adapter.layout, seed, progress, callback, "class model")
    final, _ = adapter.vjp(x, None, lambda o: np.zeros_like(o))
    return Visualisation(
        kind="class_model", images=x, layout=adapter.layout,
        labels=[f"class {t}\nscore {s:.3g}" for t, s in zip(targets, final[rows, targets])],
        title="class model visualisation", layer=None, history=history,
        meta={"targets": targets, "scores": final, "start_scores": start})
