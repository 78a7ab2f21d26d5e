"""Segments and coalitions shared by KernelSHAP and LIME.

``segments`` is an int (a grid of about that many rectangular cells, rows x cols as square as the
image allows) or an int label map: one (H, W) for every image or (N, H, W), e.g. superpixels from
``skimage.segmentation.slic``; labels are renumbered 0..M-1. A coalition z (S, M) of 0/1 keeps the
segments where z = 1 and sets the others to the baseline; the methods score each coalition with
the model (forward only) and fit one weight per segment, broadcast back to its pixels.
"""
from __future__ import annotations

import math

import numpy as np

from agnostic_cam.errors import OptionError


def grid_labels(size: tuple[int, int], count: int) -> np.ndarray:
    """(H, W) labels of a rows x cols grid with rows * cols ~ ``count``, cells as equal as possible."""
    H, W = size
    rows = max(1, min(H, round(math.sqrt(count * H / W))))
    cols = max(1, min(W, math.ceil(count / rows)))
    ry = np.minimum(np.arange(H) * rows // H, rows - 1)
    rx = np.minimum(np.arange(W) * cols // W, cols - 1)
    return (ry[:, None] * cols + rx[None, :]).astype(np.int64)


def check_segments(segments) -> int | np.ndarray:
    if isinstance(segments, (int, np.integer)) and not isinstance(segments, bool):
        if segments < 1:
            raise OptionError(f"segments must be >= 1 (grid cells) or a label map; got {segments}")
        return int(segments)
    arr = np.asarray(segments)
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.integer):
        raise OptionError("segments must be an int (grid cells) or an int label map (H, W) or (N, H, W); got "
                          f"{type(segments).__name__} of shape {getattr(arr, 'shape', None)}")
    return arr


def label_maps(segments: int | np.ndarray, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """One (H, W) label map per image, labels 0..M_i-1."""
    if isinstance(segments, int):
        return [grid_labels(size, segments)] * n
    arr = segments if segments.ndim == 3 else np.broadcast_to(segments, (n, *segments.shape))
    if arr.shape != (n, *size):
        raise OptionError(f"the segment label map must be (H, W) = {size} or (N, H, W) = {(n, *size)}; got "
                          f"{segments.shape}")
    return [np.unique(a, return_inverse=True)[1].reshape(size) for a in arr]


def coalition_masks(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Masks (S, H, W) float32 from coalitions z (S, M) and labels (H, W)."""
    return np.asarray(z, np.float32)[:, labels]


def score_coalitions(method, cap, image: int, z: np.ndarray, labels: np.ndarray, base: np.ndarray,
                     desc: str) -> np.ndarray:
    """Target scores (S,) of image ``image`` under coalitions z (S, M), ``method.rows(cap)`` at a time."""
    bs = method.rows(cap)
    batches = (coalition_masks(z[lo:lo + bs], labels) for lo in range(0, len(z), bs))
    return np.concatenate([s for _, s in method.scores(cap, image, batches, len(z), base, desc)])


def to_pixels(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-segment values (M,) broadcast to the label map (H, W)."""
    return np.asarray(values, np.float64)[labels]
