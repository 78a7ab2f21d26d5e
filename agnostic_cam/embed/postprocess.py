"""``Explanation.heatmap``'s normalisation (:func:`agnostic_cam.core.imaging.cam_to_heatmap`) in ONNX ops.

ReLU, per-map min-max ``(m - min) / (max - min + 1e-7)``, bilinear resize with half-pixel centres
(ONNX ``Resize`` ``mode='linear'``, ``coordinate_transformation_mode='half_pixel'``: the source
coordinate ``(x + 0.5) * src / dst - 0.5`` clamped to ``[0, src - 1]``, as ``resize_bilinear``;
no antialiasing), ReLU, min-max again. Maps are (N, K, h, w); the resize keeps N and K.
"""
from __future__ import annotations

from agnostic_cam.core.imaging import NORM_EPS
from agnostic_cam.embed.graph import Branch


def minmax(b: Branch, x: str) -> str:
    """Per-map min-max of (N, K, h, w) maps, as :func:`agnostic_cam.core.imaging.minmax`."""
    shifted = b.op("Sub", [x, b.reduce("ReduceMin", x, [2, 3])])
    return b.op("Div", [shifted, b.op("Add", [b.f32(NORM_EPS), b.reduce("ReduceMax", shifted, [2, 3])])])


def heatmap(b: Branch, cam: str, size: str) -> str:
    """(N, K, h, w) raw maps -> (N, K, H, W) in [0, 1]; ``size``: int64 [H, W]."""
    m = minmax(b, b.op("Relu", [cam]))
    sizes = b.concat([b.shape(m, 0, 2), size])
    resized = b.op("Resize", [m, "", "", sizes], mode="linear", coordinate_transformation_mode="half_pixel")
    return minmax(b, b.op("Relu", [resized]))


def per_map(b: Branch, cam: str) -> str:
    """(N, K, h, w) -> each map ReLU'd and min-max scaled at the layer's resolution (per-class maps)."""
    return minmax(b, b.op("Relu", [cam]))
