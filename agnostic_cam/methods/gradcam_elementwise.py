"""Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): cam = sum_c relu(G_c * A_c).

HiResCAM with the ReLU applied to each channel's contribution before the channel sum.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("gradcam_elementwise")
class GradCAMElementWise(CamMethod):
    needs = Needs.LAYER_GRADIENTS

    def maps(self, cap: Capture) -> np.ndarray:
        return np.maximum(cap.grads * cap.activations, 0)
