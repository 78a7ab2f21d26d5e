"""Eigen-CAM (Muhammad & Yeasin 2020): projection of the activations on their first principal component.

Per image, the (h*w, C) activation matrix is centred over positions and projected on its first
right singular vector. The sign of a singular vector is arbitrary; we choose it so the map
correlates positively with the channel-mean activation, so the map highlights where the layer
is active. Target-independent, forward-only (runs on ONNX Runtime).
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, LayerCapture, Needs, register
from agnostic_cam.methods.projection import first_component_projection

__all__ = ["EigenCAM", "first_component_projection"]


@register("eigencam")
class EigenCAM(CamMethod):
    needs = Needs.ACTIVATIONS

    def compute(self, cap: LayerCapture) -> np.ndarray:
        return first_component_projection(cap.activations)
