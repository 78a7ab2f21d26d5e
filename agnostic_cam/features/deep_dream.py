"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify what ``layer`` sees in an image.

Gradient ascent on ``0.5 ||A(x)||^2`` (so ``dObj/dA = A``), over an image pyramid: the image is
shrunk ``octaves - 1`` times by ``octave_scale``; starting from the smallest, each octave adds
the detail found so far (upsampled) to the image at its size and runs ``steps`` updates with
jitter. Models with a fixed input size see each octave resized to that size (bilinear, and its
transpose for the gradient), so the pyramid works for them too.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.features.common import layer_label, single_image
from agnostic_cam.features.optimise import Callback, ascend, ascent_settings
from agnostic_cam.features.result import Visualisation
from agnostic_cam.core.imaging import _interp_matrix, resize_bilinear
from agnostic_cam.errors import OptionError

DEFAULTS = {"steps": 10, "lr": 0.01, "jitter": 2, "schedule": "constant"}


def resize_images(x: np.ndarray, size: tuple[int, int], layout: str) -> np.ndarray:
    """Bilinear resize (half-pixel centres) of a batch in ``layout`` to (H, W)."""
    return L.from_chw(resize_bilinear(L.to_chw(x, layout), size), layout)


def resize_adjoint(g: np.ndarray, size: tuple[int, int], layout: str) -> np.ndarray:
    """The transpose of :func:`resize_images` from ``size`` to g's size: ``Ry^T g Rx``."""
    gc = L.to_chw(g, layout)
    ry = _interp_matrix(size[0], gc.shape[2], False).astype(np.float32)
    rx = _interp_matrix(size[1], gc.shape[3], False).astype(np.float32)
    out = np.matmul(np.matmul(ry.T, gc), rx)
    return L.from_chw(np.ascontiguousarray(out), layout)


def deep_dream(adapter, x: np.ndarray, layer: Any, octaves: int = 3, octave_scale: float = 1.4, seed: int = 0,
               progress: bool | None = None, callback: Callback | None = None, **options) -> Visualisation:
    """The dreamed image (1, ...) in the model's layout; history: ``0.5 ||A||^2`` per step (all octaves)."""
    x = single_image(x, "deep_dream")
    if not isinstance(octaves, int | np.integer) or octaves < 1:
        raise OptionError(f"octaves must be a positive integer; got {octaves!r}")
    if not octave_scale > 1:
        raise OptionError(f"octave_scale must be > 1; got {octave_scale!r}")
    settings = ascent_settings(DEFAULTS, options, "deep_dream")
    layout = adapter.layout
    hw = L.spatial_size(x.shape, layout)
    fixed = adapter.spatial is not None and any(s is not None for s in adapter.spatial)
    sizes = [tuple(max(8, round(s / octave_scale ** k)) for s in hw) for k in range(octaves)][::-1]

    def make_grad(size: tuple[int, int]):
        def grad_fn(xs: np.ndarray):
            feed = resize_images(xs, hw, layout) if fixed and size != hw else xs
            acts, g = adapter.vjp(feed, layer, lambda a: a, rule="vanilla")
            if fixed and size != hw:
                g = resize_adjoint(g, size, layout)
            return 0.5 * (acts.astype(np.float64) ** 2).reshape(acts.shape[0], -1).sum(axis=1), g
        return grad_fn

    detail = None
    histories = []
    for k, size in enumerate(sizes):
        base = resize_images(x, size, layout)
        start = base if detail is None else base + resize_images(detail, size, layout)
        out, hist = ascend(start, make_grad(size), settings, layout, seed + k, progress, callback,
                           f"deep dream octave {k + 1}/{octaves}")
        detail = out - base
        histories.append(hist)
    name = layer_label(layer)
    return Visualisation(
        kind="deep_dream", images=out, layout=layout, labels=[f"dream @ {name}"],
        title=f"deep dream, layer {name}, {octaves} octaves", layer=name, history=np.concatenate(histories),
        source=x, meta={"sizes": sizes})
