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
    needs = Needs.LAYER_GRADIENTS

    def compute(self, cap: Capture) -> np.ndarray:
        return sign_corrected_projection(np.abs(cap.grads) * cap.activations)
