"""Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with the exponential-score closed form).

alpha = G^2 / (2 G^2 + sum_hw(A) G^3 + 1e-6), alpha = 0 where G == 0; w_c = sum_hw(relu(G) alpha).
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("gradcam++")
class GradCAMPlusPlus(CamMethod):
    needs = Needs.LAYER_GRADIENTS

    def weights(self, cap: Capture) -> np.ndarray:
        g, a, ax = cap.grads, cap.activations, cap.spatial_axes
        g2 = g**2
        denom = 2 * g2 + a.sum(axis=ax, keepdims=True) * g2 * g + 1e-6
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=g != 0)
        return (alpha * np.maximum(g, 0)).sum(axis=ax)
