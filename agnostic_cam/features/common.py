"""Helpers the feature visualisations share: input shapes, starting images, layer labels."""
from __future__ import annotations

from typing import Any

import numpy as np
from agnostic_cam.errors import InputError

from agnostic_cam.core import layout as L
def layer_label(layer: Any) -> str:
    """A printable name for a layer given by name or object (None: the model's output)."""
    if layer is None:
        return "output"
    if isinstance(layer, str):
        return layer
    return str(getattr(layer, "name", None) or type(layer).__name__)


def image_shape(adapter, shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    """One image's shape in the model's layout: ``shape`` if given, else what the adapter knows
    (a torch ``input_shape``, or a fixed Keras/ONNX input size)."""
    layout = adapter.layout
    want = L.shape_text(layout, batch=False)
    if shape is None:
        known = getattr(adapter, "input_shape", None)
        if known is not None and len(known) == 3 and all(isinstance(s, int | np.integer) for s in known):
            shape = tuple(known)
        else:
            c, hw = adapter.channels, adapter.spatial
            if c is None or hw is None or any(s is None for s in hw):
                raise InputError(f"the model's input size is not known: pass shape={want} in its layout ({layout}), "
                                 f"e.g. shape={L.sample_shape(3, (64, 64), layout)}")
            shape = L.sample_shape(c, hw, layout)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"shape is one image's shape {want} in the model's layout ({layout}); got {shape}")
    return shape


def random_image(n: int, shape: tuple[int, ...], seed: int, mean: float = 0.0, std: float = 0.1,
                 layout: str = "NCHW") -> np.ndarray:
    """``n`` images of ``shape`` (in ``layout``) drawn from N(mean, std^2) with
    ``np.random.default_rng(seed)``; drawn channel-first, so NCHW and NHWC twins start alike."""
    rng = np.random.default_rng(seed)
    cf = L.to_chw(np.empty((1, *shape)), layout).shape[1:]
    x = (mean + std * rng.standard_normal((n, *cf))).astype(np.float32)
    return L.from_chw(x, layout)


def start_images(adapter, n: int, init: np.ndarray | None, shape: tuple[int, ...] | None, seed: int,
                 init_std: float, per: str) -> np.ndarray:
    """``init`` validated as ``n`` images (one ``per`` target/channel), or seeded noise N(0, init_std^2)."""
    if init is None:
        return random_image(n, image_shape(adapter, shape), seed, std=init_std, layout=adapter.layout)
    x0 = adapter.prepare(init)
    if x0.shape[0] != n:
        raise InputError(f"init has {x0.shape[0]} images; expected one per {per} ({n})")
    return x0


def channel_list(channel: int | list[int] | tuple[int, ...] | np.ndarray, n_channels: int, what: str = "channel") -> np.ndarray:
    """Validate one channel index or a list of them against ``n_channels``."""
    ch = np.atleast_1d(np.asarray(channel))
    if ch.ndim != 1 or ch.size == 0 or not np.issubdtype(ch.dtype, np.integer):
        raise InputError(f"{what} must be an int or a non-empty list of ints; got {channel!r}")
    bad = ch[(ch < 0) | (ch >= n_channels)]
    if bad.size:
        raise InputError(f"{what} {bad.tolist()} out of range: the layer has {n_channels} channels (0..{n_channels - 1})")
    return ch.astype(np.int64)


def single_image(x: np.ndarray, what: str) -> np.ndarray:
    if x.shape[0] != 1:
        raise InputError(f"{what} takes one image (1, ...); got a batch of {x.shape[0]}: pass images[i:i + 1]")
    return x
