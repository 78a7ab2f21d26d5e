"""Layer-CAM (Jiang et al. 2021, eq. 5-6): cam = sum_c(relu(G) * A)."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, LayerCapture, Needs, register


@register("layercam")
class LayerCAM(CamMethod):
    needs = Needs.LAYER_GRADIENTS

    def maps(self, cap: LayerCapture) -> np.ndarray:
        return np.maximum(cap.grads, 0) * cap.activations
