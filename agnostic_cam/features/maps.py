"""Feature maps (the activations of a layer) and convolution filters as images."""
from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_cam.features.common import channel_list, layer_label
from agnostic_cam.features.result import FeatureMaps, Filters
from agnostic_cam.errors import InputError, ModelError, OptionError


def rank_channels(acts: np.ndarray, top_k: int) -> np.ndarray:
    """Indices of the ``top_k`` channels of ``acts`` (N, C, h, w) with the largest mean activation
    over the batch and positions, largest first (ties: lower index first)."""
    means = acts.reshape(acts.shape[0], acts.shape[1], -1).mean(axis=(0, 2), dtype=np.float64)
    return np.argsort(-means, kind="stable")[:top_k].astype(np.int64)


def feature_maps(adapter, x: np.ndarray, layer: Any, top_k: int = 16, channels: Any = None) -> FeatureMaps:
    """The activations of ``layer`` for a validated batch ``x``: ``top_k`` channels ranked by mean
    activation, or the given ``channels``. Returns :class:`FeatureMaps` (maps (N, k, h, w))."""
    (acts,) = adapter.activations(x, [layer])
    acts = np.asarray(acts, dtype=np.float32)
    if acts.ndim != 4:
        raise ModelError(f"layer {layer_label(layer)!r} outputs shape {acts.shape}, not a spatial map (N, C, h, w); "
                         "pick a convolutional layer")
    if channels is not None:
        ch = channel_list(channels, acts.shape[1], "channels")
    else:
        if not isinstance(top_k, int | np.integer) or top_k < 1:
            raise OptionError(f"top_k must be a positive integer; got {top_k!r}")
        ch = rank_channels(acts, int(top_k))
    maps = acts[:, ch]
    return FeatureMaps(maps=maps, channels=ch, means=maps.mean(axis=(2, 3)), layer=layer_label(layer))


def filters(adapter, layer: Any) -> Filters:
    """The kernel of convolution ``layer`` as (O, I, kh, kw) float32 (see :class:`Filters`)."""
    w = np.asarray(adapter.conv_weights(layer), dtype=np.float32)
    if w.ndim != 4:
        raise InputError(f"layer {layer_label(layer)!r} has a kernel of shape {w.shape}, not a 2-D convolution's (O, I, kh, kw)")
    return Filters(weights=w, layer=layer_label(layer))
