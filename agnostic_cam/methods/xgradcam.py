"""XGrad-CAM (Fu et al. 2020, eq. 9): w_c = sum_hw(G * A / (sum_hw(A) + 1e-7))."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("xgradcam")
class XGradCAM(CamMethod):
    needs = Needs.LAYER_GRADIENTS

    def weights(self, cap: Capture) -> np.ndarray:
        a, ax = cap.activations, cap.spatial_axes
        return (cap.grads * a / (a.sum(axis=ax, keepdims=True) + 1e-7)).sum(axis=ax)
