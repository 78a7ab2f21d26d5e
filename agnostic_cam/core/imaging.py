"""Array helpers shared by every method: bilinear resizing and per-map normalisation.

Pure NumPy (no OpenCV). Resizing is separable: ``out = Ry @ map @ Rx.T`` with two small
interpolation matrices, which is exact bilinear interpolation and fast for batches of maps.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

NORM_EPS = 1e-7


@lru_cache(maxsize=64)
def _interp_matrix(src: int, dst: int, align_corners: bool) -> np.ndarray:
    """(dst, src) matrix of 1-D linear interpolation weights.

    ``align_corners=False`` follows OpenCV's ``INTER_LINEAR`` (half-pixel centres,
    ``x_src = (x_dst + 0.5) * src / dst - 0.5`` clamped to ``[0, src - 1]``);
    ``align_corners=True`` follows ``torch.nn.UpsamplingBilinear2d``
    (``x_src = x_dst * (src - 1) / (dst - 1)``).
    """
    d = np.arange(dst, dtype=np.float64)
    if align_corners:
        pos = d * ((src - 1) / (dst - 1)) if dst > 1 else np.zeros_like(d)
    else:
        pos = (d + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, src - 1)
    frac = pos - i0
    m = np.zeros((dst, src), dtype=np.float64)
    rows = np.arange(dst)
    np.add.at(m, (rows, i0), 1.0 - frac)
    np.add.at(m, (rows, i1), frac)
    m.setflags(write=False)
    return m


def resize_bilinear(maps: np.ndarray, size: tuple[int, int], align_corners: bool = False) -> np.ndarray:
    """Resize maps of shape ``(..., h, w)`` to ``(..., H, W)`` with bilinear interpolation.

    Returns float32. ``size`` is ``(H, W)``.
    """
    maps = np.asarray(maps)
    h, w = maps.shape[-2:]
    H, W = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return maps.astype(np.float32, copy=True)
    ry = _interp_matrix(h, H, align_corners).astype(np.float32)
    rx = _interp_matrix(w, W, align_corners).astype(np.float32)
    out = np.matmul(np.matmul(ry, maps.astype(np.float32)), rx.T)
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_trilinear(maps: np.ndarray, size: tuple[int, int, int], align_corners: bool = False) -> np.ndarray:
    """Resize volumes of shape ``(..., d, h, w)`` to ``(..., D, H, W)`` with trilinear interpolation
    (the same 1-D rule as :func:`resize_bilinear` on each axis, as ``torch.nn.functional.interpolate``
    with mode='trilinear'). Returns float32."""
    maps = np.asarray(maps, dtype=np.float32)
    d = maps.shape[-3]
    flat = resize_bilinear(maps, size[1:], align_corners)
    if d == int(size[0]):
        return flat
    rz = _interp_matrix(d, int(size[0]), align_corners).astype(np.float32)
    return np.ascontiguousarray(np.einsum("zd,...dhw->...zhw", rz, flat), dtype=np.float32)


def resize(maps: np.ndarray, size: tuple, align_corners: bool = False) -> np.ndarray:
    """Bilinear resize of maps (..., h, w) to ``size`` (H, W), trilinear of volumes (..., d, h, w)
    to ``size`` (D, H, W)."""
    if len(size) == 3:
        return resize_trilinear(maps, size, align_corners)
    return resize_bilinear(maps, size, align_corners)


def minmax(maps: np.ndarray, eps: float = NORM_EPS, ndim: int = 2) -> np.ndarray:
    """Per-map min-max scaling of ``(N, h, w)`` maps (``ndim`` 3: ``(N, d, h, w)`` volumes) to [0, 1]:
    ``(m - min) / (max - min + eps)``."""
    maps = np.asarray(maps, dtype=np.float32)
    axes = tuple(range(-ndim, 0))
    out = maps - maps.min(axis=axes, keepdims=True)
    return out / (eps + out.max(axis=axes, keepdims=True))


def cam_to_heatmap(cam: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """The CAM post-processing every CAM method shares (pytorch-grad-cam's convention).

    ``cam`` (N, h, w) -> heatmap (N, H, W) float32 in [0, 1]:
    ReLU, per-map min-max, bilinear resize (half-pixel centres), ReLU, min-max again. Volumes:
    ``cam`` (N, d, h, w) and ``size`` (D, H, W), trilinear resize, each volume scaled as one map.
    """
    nd = len(size)
    cam = np.maximum(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0)
    heat = resize(minmax(cam, ndim=nd), size)
    return minmax(np.maximum(heat, 0), ndim=nd)
