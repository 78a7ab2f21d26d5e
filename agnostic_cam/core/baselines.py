"""Images with the evidence removed: the baselines of perturbation methods and metrics.

RISE, occlusion, LIME and KernelSHAP blend images towards a baseline; deletion/insertion curves and
ROAD start from one. Pure NumPy (SciPy's 1-D Gaussian filter for the blur).
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.errors import OptionError


def blur(images: np.ndarray, layout: str, sigma: float = 5.0, radius: int = 5) -> np.ndarray:
    """Gaussian blur (separable, edge-replicated), the insertion baseline of RISE (klen 11, sigma 5):
    ``scipy.ndimage.gaussian_filter1d`` along H and W, ``mode='nearest'``, kernel radius ``radius``."""
    from scipy.ndimage import gaussian_filter1d

    out = images.astype(np.float32)
    for ax in L.spatial_axes(layout):
        out = gaussian_filter1d(out, sigma, axis=ax, mode="nearest", radius=int(radius))
    return out.astype(np.float32)


def baseline_for(images: np.ndarray, kind, layout: str) -> np.ndarray:
    """'zero', 'blur', 'mean' (per-image channel mean) or a number: the image with no evidence."""
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return np.full_like(images, float(kind))
    if kind == "zero":
        return np.zeros_like(images)
    if kind == "blur":
        return blur(images, layout)
    if kind == "mean":
        axes = L.spatial_axes(layout)
        return np.broadcast_to(images.mean(axis=axes, keepdims=True), images.shape).copy()
    raise OptionError(f"baseline must be 'zero', 'blur', 'mean' or a number; got {kind!r}")
