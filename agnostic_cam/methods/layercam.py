"""Layer-CAM (Jiang et al. 2021, eq. 5-6): cam = sum_c(relu(G) * A)."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("layercam")
class LayerCAM(CamMethod):
    needs = Needs.LAYER_GRADIENTS

    def maps(self, cap: Capture) -> np.ndarray:
        return np.maximum(cap.grads, 0) * cap.activations
