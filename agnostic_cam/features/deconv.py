"""Deconvnet reconstructions (Zeiler & Fergus 2014, section 2.1).

For each of the ``top_k`` channels of ``layer`` with the strongest activation on the image,
keep only that channel's largest activation ``A[c, i, j]``, zero everything else, and project it
back to pixel space: max-unpooling through the forward pass's switches, transposed convolutions,
and ReLU applied to the backward signal (the adapter's ``rule='deconv'``). That projection is
the input gradient of ``<A, M>`` with ``M = A * one_hot(c, i, j)`` under the deconv rule.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_cam.features.common import channel_list, layer_label, single_image
from agnostic_cam.features.result import Visualisation
from agnostic_cam.errors import ModelError, OptionError


def strongest(acts: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Channels of ``acts`` (1, C, h, w) ranked by their maximum (largest first, ties by index) and
    the flat position of each channel's maximum. Returns (channels (k,), positions (k,))."""
    a = acts[0].reshape(acts.shape[1], -1)
    ch = np.argsort(-a.max(axis=1), kind="stable")[:top_k]
    return ch.astype(np.int64), a[ch].argmax(axis=1).astype(np.int64)


def keep_one(acts: np.ndarray, channels: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Cotangent (k, C, h, w): row r keeps ``acts[r, channels[r]]`` at flat ``positions[r]``, zero elsewhere."""
    k, c = acts.shape[:2]
    cot = np.zeros_like(acts)
    flat_a = acts.reshape(k, c, -1)
    flat_c = cot.reshape(k, c, -1)
    rows = np.arange(k)
    flat_c[rows, channels, positions] = flat_a[rows, channels, positions]
    return cot


def deconv_reconstruction(adapter, x: np.ndarray, layer: Any, top_k: int = 5, channels: Any = None,
                          rule: str = "deconv") -> Visualisation:
    """One reconstruction per filter, (k, ...) in the input's layout, for one image ``x`` (1, ...).

    channels: explicit channels instead of the ``top_k`` strongest. rule: 'deconv' (Zeiler &
    Fergus) or 'guided' (guided backpropagation of the same single activation).
    """
    x = single_image(x, "deconv_reconstruction")
    if rule not in ("deconv", "guided", "vanilla"):
        raise OptionError(f"rule must be 'deconv', 'guided' or 'vanilla'; got {rule!r}")
    (acts,) = adapter.activations(x, [layer])
    if acts.ndim != 4:
        raise ModelError(f"layer {layer_label(layer)!r} outputs shape {acts.shape}, not a spatial map (N, C, h, w)")
    if channels is None:
        if not isinstance(top_k, int | np.integer) or top_k < 1:
            raise OptionError(f"top_k must be a positive integer; got {top_k!r}")
        ch, pos = strongest(acts, int(top_k))
    else:
        ch = channel_list(channels, acts.shape[1], "channels")
        pos = acts[0].reshape(acts.shape[1], -1)[ch].argmax(axis=1)
    k = len(ch)
    a_flat = acts[0].reshape(acts.shape[1], -1)
    values = a_flat[ch, pos]
    _, recon = adapter.vjp(np.repeat(x, k, axis=0), layer, lambda a: keep_one(a, ch, pos), rule=rule)
    h, w = acts.shape[2:]
    name = layer_label(layer)
    return Visualisation(
        kind="deconv", images=np.asarray(recon, np.float32), layout=adapter.layout,
        labels=[f"filter {c}\n{v:.3g} @ ({p // w}, {p % w})" for c, v, p in zip(ch, values, pos)],
        title=f"layer {name}, top {k} filters" if channels is None else f"layer {name}, filters {ch.tolist()}",
        layer=name, source=x, meta={"channels": ch, "positions": np.stack([pos // w, pos % w], 1),
                                    "values": values, "rule": rule, "map_size": (h, w)})
