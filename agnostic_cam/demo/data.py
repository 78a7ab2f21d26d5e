"""Synthetic 'shapes' images the demo model learns in seconds (NumPy only, no downloads).

Each image is a noisy background with one coloured shape at a random place and size; the label
is the shape. Because the evidence for the class sits in one known region, the data also gives
ground-truth boxes for faithfulness checks and the pointing game.
"""
from __future__ import annotations

import numpy as np
from agnostic_cam.errors import InputError

from agnostic_cam.core import layout as L
CLASSES = ("disk", "square", "triangle", "cross")


def shape_mask(kind: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """(size, size) bool mask of one shape centred at (cy, cx) with half-size r."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if kind == "disk":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if kind == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if kind == "cross":
        t = r * 0.3
        return ((np.abs(dy) <= t) & (np.abs(dx) <= r)) | ((np.abs(dx) <= t) & (np.abs(dy) <= r))
    raise InputError(f"unknown shape {kind!r}; known: {CLASSES}")


def make_shapes(n: int, size: int = 64, seed: int = 0, layout: str = "NCHW"):
    """``n`` images (float32 in [0, 1], NCHW or NHWC), labels (n,) and boxes (n, 4) as (y0, x0, y1, x1)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, len(CLASSES), size=n)
    boxes = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        bg = rng.uniform(0.1, 0.4, size=3).astype(np.float32)
        img = bg + rng.normal(0, 0.06, size=(size, size, 3)).astype(np.float32)
        r = rng.uniform(size * 0.12, size * 0.22)
        cy, cx = rng.uniform(r + 1, size - r - 1, size=2)
        mask = shape_mask(CLASSES[labels[i]], size, cy, cx, r)
        color = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
        img[mask] = color + rng.normal(0, 0.03, size=(int(mask.sum()), 3)).astype(np.float32)
        images[i] = np.clip(img, 0, 1)
        ys, xs = np.nonzero(mask)
        boxes[i] = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    return np.ascontiguousarray(L.from_chw(L.to_chw(images, L.NHWC), layout)), labels.astype(np.int64), boxes
