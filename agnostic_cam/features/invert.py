"""Representation inversion (Mahendran & Vedaldi 2015, eq. 1-5).

``x* = argmin_x ||A(x) - A0||^2 / ||A0||^2 + lambda_tv TV_beta(x) + lambda_2/2 ||x||^2`` where
``A0`` is the representation of the given image at ``layer``: an image the layer cannot tell
apart from the original. Here ``dObj/dA = (A - A0) / ||A0||^2`` (times -1 for the ascent loop).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_cam.features.common import layer_label, random_image, single_image
from agnostic_cam.features.optimise import Callback, ascend, ascent_settings
from agnostic_cam.features.result import Visualisation
from agnostic_cam.errors import InputError

DEFAULTS = {"steps": 200, "lr": 0.05, "tv": 0.001, "tv_beta": 2.0, "jitter": 0}


def representation_distance(acts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Relative squared distance ``||A - A0||^2 / ||A0||^2`` per image, (N,) float64."""
    d = (acts.astype(np.float64) - target).reshape(acts.shape[0], -1)
    t = target.astype(np.float64).reshape(target.shape[0], -1)
    return (d ** 2).sum(axis=1) / np.maximum((t ** 2).sum(axis=1), 1e-12)


def invert(adapter, x: np.ndarray, layer: Any, seed: int = 0, init: np.ndarray | None = None,
           init_std: float | None = None, progress: bool | None = None, callback: Callback | None = None,
           **options) -> Visualisation:
    """The reconstruction (1, ...) in the model's layout. Starts from seeded noise around the
    image's mean with its standard deviation (``init_std`` overrides), or from ``init``.

    history: (steps, 1) the relative distance before each step; meta: 'start_distance',
    'distance' (of the returned image).
    """
    x = single_image(x, "invert")
    settings = ascent_settings(DEFAULTS, options, "invert")
    (a0,) = adapter.activations(x, [layer])
    a0 = np.asarray(a0, dtype=np.float32)
    scale = float(max((a0.astype(np.float64) ** 2).sum(), 1e-12))
    if init is not None:
        x0 = adapter.prepare(init)
        if x0.shape != x.shape:
            raise InputError(f"init must have the image's shape {x.shape}; got {x0.shape}")
    else:
        std = float(x.std()) if init_std is None else float(init_std)
        x0 = random_image(1, x.shape[1:], seed, float(x.mean()), std, adapter.layout)

    def grad_fn(xs: np.ndarray):
        acts, g = adapter.vjp(xs, layer, lambda a: (a0 - a) / scale, rule="vanilla")
        return representation_distance(acts, a0), g

    (start,) = adapter.activations(x0, [layer])
    out, history = ascend(x0, grad_fn, settings, adapter.layout, seed, progress, callback, "inversion")
    (final,) = adapter.activations(out, [layer])
    d0, d1 = float(representation_distance(start, a0)[0]), float(representation_distance(final, a0)[0])
    name = layer_label(layer)
    return Visualisation(
        kind="invert", images=out, layout=adapter.layout, labels=[f"inverted @ {name}\ndistance {d1:.3g}"],
        title=f"inversion of layer {name}", layer=name, history=history, source=x,
        meta={"start_distance": d0, "distance": d1})
