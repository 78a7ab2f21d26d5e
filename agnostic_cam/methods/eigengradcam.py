"""Eigen-Grad-CAM (pytorch-grad-cam's EigenGradCAM): Eigen-CAM of the element-wise product G * A.

First principal component of the centred (h*w, C) matrix of G * A per image (class-specific,
unlike Eigen-CAM). The component's sign is arbitrary; it is chosen so the map correlates
positively with the channel mean of G * A.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.methods.projection import first_component_projection


@register("eigengradcam")
class EigenGradCAM(CamMethod):
    needs = Needs.LAYER_GRADIENTS

    def compute(self, cap: Capture) -> np.ndarray:
        return first_component_projection(cap.grads * cap.activations)
