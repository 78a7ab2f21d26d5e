"""Random-CAM: a baseline with channel weights drawn uniformly from [-1, 1].

cam = sum_c w_c * A_c with w ~ U(-1, 1) per image and channel, as pytorch-grad-cam's RandomCAM,
but from a seeded generator (``seed``; None draws fresh weights every call) and forward-only:
it needs no gradients, so it runs on ONNX Runtime. Use it as the floor an explanation must beat.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("randomcam")
class RandomCAM(CamMethod):
    needs = Needs.ACTIVATIONS

    def __init__(self, seed: int | None = 0):
        self.seed = seed

    def weights(self, cap: Capture) -> np.ndarray:
        return np.random.default_rng(self.seed).uniform(-1, 1, size=cap.activations.shape[:2])
