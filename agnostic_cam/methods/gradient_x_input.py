"""Gradient x input (Shrikumar et al. 2016): raw = x * dS/dx, element-wise, (N, C, H, W)."""
import numpy as np

from agnostic_cam.methods.base import register
from agnostic_cam.methods.pixel import PixelMethod


@register("gradient_x_input")
class GradientXInput(PixelMethod):
    rule = "vanilla"

    def from_grads(self, inputs: np.ndarray, grads: np.ndarray) -> np.ndarray:
        return inputs * grads
