"""Filter (channel) maximisation (Erhan et al. 2009; Yosinski et al. 2015).

``x* = argmax_x mean_{i,j} A_c(x)[i, j] - regularisers``: the image that drives the mean
activation of channel ``c`` of ``layer`` highest. ``dObj/dA`` is ``1/(h w)`` on channel ``c``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_cam.features.common import layer_label, start_images
from agnostic_cam.features.optimise import Callback, ascend, ascent_settings
from agnostic_cam.features.result import Visualisation
from agnostic_cam.errors import InputError, ModelError

DEFAULTS = {"steps": 80, "lr": 0.05, "normalise": True, "l2": 0.1, "tv": 0.3, "jitter": 2, "blur_sigma": 0.3, "blur_every": 4}


def channel_mean_cotangent(acts: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """(N, C, h, w) cotangent: ``1 / (h w)`` on channel ``channels[n]`` of row n, zero elsewhere."""
    if acts.ndim != 4:
        raise ModelError(f"filter maximisation needs a spatial layer (N, C, h, w); this one outputs {acts.shape}")
    if channels.max() >= acts.shape[1]:
        raise InputError(f"channel {int(channels.max())} out of range: the layer has {acts.shape[1]} channels "
                         f"(0..{acts.shape[1] - 1})")
    cot = np.zeros_like(acts)
    cot[np.arange(acts.shape[0]), channels] = 1.0 / (acts.shape[2] * acts.shape[3])
    return cot


def filter_maximisation(adapter, layer: Any, channel: int | list[int], shape: tuple[int, ...] | None = None,
                        seed: int = 0, init: np.ndarray | None = None, init_std: float = 0.1,
                        progress: bool | None = None, callback: Callback | None = None, **options) -> Visualisation:
    """One image per channel, in the model's layout; history (steps, N): the channel means."""
    ch = np.atleast_1d(np.asarray(channel))
    if ch.ndim != 1 or ch.size == 0 or not np.issubdtype(ch.dtype, np.integer):
        raise InputError(f"channel must be an int or a list of ints; got {channel!r}")
    if ch.min() < 0:
        raise InputError(f"channel indices must be >= 0; got {ch.tolist()}")
    settings = ascent_settings(DEFAULTS, options, "filter_maximisation")
    n = len(ch)
    x0 = start_images(adapter, n, init, shape, seed, init_std, "channel")
    rows = np.arange(n)

    def grad_fn(x: np.ndarray):
        acts, g = adapter.vjp(x, layer, lambda a: channel_mean_cotangent(a, ch), rule="vanilla")
        return acts[rows, ch].mean(axis=(1, 2)), g

    x, history = ascend(x0, grad_fn, settings, adapter.layout, seed, progress, callback, "filter maximisation")
    name = layer_label(layer)
    return Visualisation(
        kind="filter_max", images=x, layout=adapter.layout,
        labels=[f"{name}[{c}]\nmean {v:.3g}" for c, v in zip(ch, history[-1])],
        title=f"filter maximisation, layer {name}", layer=name, history=history, meta={"channels": ch})
