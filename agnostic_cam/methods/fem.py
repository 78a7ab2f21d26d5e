"""FEM, Feature Explanation Method (Fuad et al. 2020), forward-only on ONNX Runtime.

Per image and channel, positions above the k-sigma threshold mean + k * std (over (h, w)) form
a binary mask; w_c = the fraction of positions in the mask; cam = sum_c w_c * A_c.
Target-independent.
"""
import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("fem")
class FEM(CamMethod):
    needs = Needs.ACTIVATIONS

    def __init__(self, k: float = 2.0):
        if not np.isfinite(k):
            raise OptionError(f"fem: k (the number of standard deviations of the threshold) must be finite; got {k!r}")
        self.k = float(k)

    def weights(self, cap: Capture) -> np.ndarray:
        a, ax = cap.activations, cap.spatial_axes
        th = a.mean(axis=ax, keepdims=True) + self.k * a.std(axis=ax, keepdims=True)
        return (a > th).mean(axis=ax)
