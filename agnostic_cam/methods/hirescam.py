"""HiResCAM (Draelos & Carin 2020): cam = sum_c(G * A), element-wise, no pooling of gradients."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("hirescam")
class HiResCAM(CamMethod):
    needs = Needs.LAYER_GRADIENTS

    def maps(self, cap: Capture) -> np.ndarray:
        return cap.grads * cap.activations
