"""Eigen-Grad-CAM (pytorch-grad-cam's EigenGradCAM): Eigen-CAM of the element-wise product G * A.

First principal component of the centred (h*w, C) matrix of G * A per image (class-specific,
unlike Eigen-CAM). The component's sign is arbitrary; it is chosen so the map correlates
positively with the channel mean of G * A.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.methods.projection import first_component_projection


@register("eigengradcam")
class EigenGradCAM(CamMethod):
    """Eigen-Grad-CAM: Eigen-CAM of the element-wise product of gradients and activations.

    Source: pytorch-grad-cam's ``EigenGradCAM`` (J. Gildenblat and contributors), Eigen-CAM
    (M. B. Muhammad and M. Yeasin, IJCNN 2020, arXiv:2008.00299) applied to G * A; no paper of
    its own.

    With A the target layer's activations (N, C, h, w) and G = dS/dA (S the target's score),
    per image: M = the (h*w, C) matrix of G * A centred over positions, v1 its first right
    singular vector:

        cam = relu(M v1)              reshaped to (h, w)

    Class-specific, unlike Eigen-CAM. The sign of v1 is chosen so the map correlates positively
    with the channel mean of G * A. Needs layer gradients.

    Options: none of its own (``aug_smooth=False``, ``batch_size=None``).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="eigengradcam", target=[1, 2])
        >>> exp.heatmap.shape, exp.raw.shape, exp.targets.tolist()
        ((2, 32, 32), (2, 16, 16), [1, 2])
    """

    needs = Needs.LAYER_GRADIENTS

    def compute(self, cap: Capture) -> np.ndarray:
        return first_component_projection(cap.grads * cap.activations)
