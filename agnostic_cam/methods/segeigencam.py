"""Seg-Eigen-CAM (Chung & Ying 2025): Eigen-CAM of |G| * A with sign correction.

Gradient weighting |dS/dA| * A (eq. 10), first principal component of the centred (h*w, C)
matrix (eq. 11-12), flipped when |min| > |max| so the strongest response is positive (eq. 13).
pytorch-grad-cam 1.5.7 defines it with gradients, so it needs them here too.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.methods.projection import sign_corrected_projection


@register("segeigencam")
class SegEigenCAM(CamMethod):
    """Seg-Eigen-CAM: Eigen-CAM of |G| * A with a sign correction, made for segmentation models.

    Paper: C.-T. Chung and J. J.-C. Ying, "Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for
    Semantic Segmentation Models", Applied Sciences 15(13):7562, 2025 (eq. 10-13).

    With A the target layer's activations (N, C, h, w) and G = dS/dA (S the target's score),
    per image: M = the (h*w, C) matrix of |G| * A (eq. 10) centred over positions, v1 its first
    right singular vector (eq. 11-12):

        p   = M v1
        p   = -p  where |min(p)| > |max(p)|       (eq. 13: the strongest response is positive)
        cam = relu(p)                              reshaped to (h, w)

    Needs layer gradients (as pytorch-grad-cam 1.5.7 defines it). For a segmentation model,
    explain a region with ``target=agnostic_cam.targets.SegmentationMask(...)``.

    Options: none of its own (``aug_smooth=False``, ``batch_size=None``).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="segeigencam")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> bool(exp.raw.max() >= -exp.raw.min())  # sign-corrected: the strongest value is positive
        True
    """

    needs = Needs.LAYER_GRADIENTS

    def compute(self, cap: Capture) -> np.ndarray:
        return sign_corrected_projection(np.abs(cap.grads) * cap.activations)
