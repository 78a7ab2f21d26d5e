"""Image regularisers for activation maximisation and inversion, in NumPy, in either layout.

Every function takes a batch ``x`` (N, C, H, W) or (N, H, W, C) and ``axes``, the two spatial
axes ((2, 3) for NCHW, (1, 2) for NHWC); see :func:`spatial_axes`.

- L2 decay (Simonyan et al. 2014, eq. 1): ``R(x) = lambda/2 * ||x||^2``, gradient ``lambda * x``.
- Total variation (Mahendran & Vedaldi 2015, eq. 5):
  ``TV_beta(x) = sum_{c,i,j} ((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2 + eps)^(beta/2)``
  with replicated borders (the difference past the last row/column is zero).
- Gaussian blur every few steps and random jitter (Yosinski et al. 2015; Mordvintsev et al. 2015).
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.core import layout as L
TV_EPS = 1e-8


def spatial_axes(layout: str) -> tuple[int, int]:
    """The (H, W) axes of a batch in ``layout``."""
    return L.spatial_axes(L.image_layout(layout))


def jitter(x: np.ndarray, dy: int, dx: int, axes: tuple[int, int]) -> np.ndarray:
    """Shift ``x`` circularly by (dy, dx) pixels; ``jitter(jitter(x, dy, dx), -dy, -dx) == x``."""
    return np.roll(x, (int(dy), int(dx)), axis=axes)


def gaussian_blur(x: np.ndarray, sigma: float, axes: tuple[int, int]) -> np.ndarray:
    """Separable Gaussian blur of standard deviation ``sigma`` pixels over ``axes``:
    ``scipy.ndimage.gaussian_filter1d`` with mirrored borders (``mode='reflect'``) and a kernel radius
    of ``round(3 sigma)`` (``truncate=3``). ``sigma <= 0`` is a no-op."""
    if sigma <= 0:
        return x.copy()
    from scipy.ndimage import gaussian_filter1d

    out = np.asarray(x, dtype=np.float64)
    for ax in axes:
        out = gaussian_filter1d(out, sigma, axis=ax, mode="reflect", truncate=3.0)
    return out.astype(x.dtype, copy=False)


def _diffs(x: np.ndarray, axes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences along H and W with a zero difference at the last row/column."""
    ah, aw = axes
    dh = np.diff(x, axis=ah, append=np.take(x, [-1], axis=ah))
    dw = np.diff(x, axis=aw, append=np.take(x, [-1], axis=aw))
    return dh, dw


def total_variation(x: np.ndarray, axes: tuple[int, int], beta: float = 2.0) -> np.ndarray:
    """TV_beta per image, (N,) float64 (Mahendran & Vedaldi 2015, eq. 5)."""
    x = np.asarray(x, dtype=np.float64)
    dh, dw = _diffs(x, axes)
    v = (dh ** 2 + dw ** 2 + TV_EPS) ** (beta / 2)
    return v.reshape(v.shape[0], -1).sum(axis=1)


def total_variation_grad(x: np.ndarray, axes: tuple[int, int], beta: float = 2.0) -> np.ndarray:
    """d TV_beta / dx, same shape and dtype as ``x``.

    With ``s = dh^2 + dw^2 + eps`` and ``q = beta * s^(beta/2 - 1)``: pixel (i, j) enters
    ``dh[i-1, j]`` and ``dw[i, j-1]`` with sign +1 and ``dh[i, j]``, ``dw[i, j]`` with sign -1, so
    ``grad = q*(-dh - dw) + shift_down(q*dh) + shift_right(q*dw)`` (shifts fill with zero).
    """
    x64 = np.asarray(x, dtype=np.float64)
    ah, aw = axes
    dh, dw = _diffs(x64, axes)
    q = beta * (dh ** 2 + dw ** 2 + TV_EPS) ** (beta / 2 - 1)
    qh, qw = q * dh, q * dw
    # the replicated last row/column has zero difference: it contributes nothing
    g = -(qh + qw)
    g += _shift_forward(qh, ah)
    g += _shift_forward(qw, aw)
    return g.astype(x.dtype, copy=False)


def _shift_forward(a: np.ndarray, axis: int) -> np.ndarray:
    """``out[i] = a[i - 1]`` along ``axis``, ``out[0] = 0``; the last entry of ``a`` is dropped."""
    out = np.zeros_like(a)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    src[axis] = slice(0, -1)
    dst[axis] = slice(1, None)
    out[tuple(dst)] = a[tuple(src)]
    return out
