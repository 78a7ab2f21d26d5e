"""Eigen-CAM (Muhammad & Yeasin 2020): projection of the activations on their first principal component.

Per image, the (h*w, C) activation matrix is centred over positions and projected on its first
right singular vector. The sign of a singular vector is arbitrary; we choose it so the map
correlates positively with the channel-mean activation, so the map highlights where the layer
is active. Target-independent, forward-only (runs on ONNX Runtime).
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.methods.projection import first_component_projection

__all__ = ["EigenCAM", "first_component_projection"]


@register("eigencam")
class EigenCAM(CamMethod):
    needs = Needs.ACTIVATIONS

    def compute(self, cap: Capture) -> np.ndarray:
        a = cap.activations.astype(np.float64)  # scale: |projection terms| <= the channel vector's norm
        self.scale = np.sqrt((a ** 2).sum(axis=1)).reshape(a.shape[0], -1).max(axis=1)
        return first_component_projection(cap.activations)
