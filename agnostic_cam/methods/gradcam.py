"""Grad-CAM (Selvaraju et al. 2017, eq. 1): w_c = mean over (h, w) of dS/dA_c."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("gradcam")
class GradCAM(CamMethod):
    needs = Needs.LAYER_GRADIENTS

    def weights(self, cap: Capture) -> np.ndarray:
        return cap.grads.mean(axis=cap.spatial_axes)
