"""FullGrad (Srinivas & Fleuret 2019, eq. 5), pytorch-grad-cam's definition. Layer-free.

map = psi(|x * dS/dx|) + sum over bias layers l of sum_c psi(|b_c * dS/dz_c|), where z is layer l's
output, b its bias (BatchNorm: the effective bias beta - mean * gamma / sqrt(var + eps)) and psi
scales every channel map to [0, 1] (min-max, eps 1e-7) and resizes it to the input size
(bilinear, half-pixel centres). Bias layers: every convolution and batch norm with a bias
(``Needs.BIAS_GRADIENTS``); the target layer is not used.
"""
import numpy as np

from agnostic_cam.core.imaging import minmax, resize_bilinear
from agnostic_cam.methods.base import Capture, Method, Needs, register


def channel_maps(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, h, w) -> (N, H, W): each channel min-max scaled, resized, then summed over channels.
    Resizing is linear, so the channels are summed first and resized once (same result, C times
    less work)."""
    n, c = a.shape[:2]
    scaled = minmax(a.reshape(n * c, *a.shape[2:])).reshape(a.shape)
    return resize_bilinear(scaled.sum(axis=1, dtype=np.float64).astype(np.float32), size)


@register("fullgrad")
class FullGrad(Method):
    needs = Needs.BIAS_GRADIENTS

    def compute(self, cap: Capture) -> np.ndarray:
        x, gx = cap.x, cap.input_grads
        if cap.layout == "NHWC":
            x, gx = x.transpose(0, 3, 1, 2), gx.transpose(0, 3, 1, 2)
        size = cap.input_size
        total = channel_maps(np.abs(gx * x), size)
        for bias, g in cap.bias_terms:
            total += channel_maps(np.abs(bias[None, :, None, None] * g), size)
        return total
