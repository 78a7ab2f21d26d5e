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
    """FullGrad: input-gradient and bias-gradient maps of every layer, summed (no target layer).

    Paper: S. Srinivas and F. Fleuret, "Full-Gradient Representation for Neural Network
    Visualization", NeurIPS 2019, arXiv:1905.00780 (eq. 5); pytorch-grad-cam's definition.

    With x the image, S the target's score, and for every convolution and batch norm l with a
    bias: z_l its output (N, C_l, h_l, w_l), b_l its bias (BatchNorm: the effective bias
    beta - mean * gamma / sqrt(var + eps)):

        map = psi(|x * dS/dx|) + sum_l sum_c psi(|b_(l,c) * dS/dz_(l,c)|)

    where psi min-max scales each channel map to [0, 1] (eps 1e-7) and resizes it to the input
    size (bilinear, half-pixel centres). ``raw`` is the map (N, H, W); the target layer is not
    used (``exp.layer_used`` is False). Needs the bias gradients (PyTorch, Keras, or ONNX with gradients).

    Options: none of its own (``aug_smooth=False``, ``batch_size=None``).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="fullgrad")
        >>> exp.heatmap.shape, exp.raw.shape, exp.layer_used
        ((2, 32, 32), (2, 32, 32), False)
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

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
