"""Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): cam = sum_c relu(G_c * A_c).

HiResCAM with the ReLU applied to each channel's contribution before the channel sum.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("gradcam_elementwise")
class GradCAMElementWise(CamMethod):
    """Grad-CAM element-wise: HiResCAM with a ReLU on each channel's contribution.

    Source: pytorch-grad-cam's ``GradCAMElementWise`` (J. Gildenblat and contributors), a variant
    of HiResCAM (R. L. Draelos and L. Carin, arXiv:2011.08891, 2020); no paper of its own.

    With A the target layer's activations (N, C, h, w) and G = dS/dA (S the target's score):

        cam = sum_c relu(G_c * A_c)

    Options: none of its own; ``eigen_smooth=False`` (first principal component of
    relu(G * A)), ``aug_smooth=False`` and ``batch_size=None``. Needs layer gradients.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="gradcam_elementwise")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> bool((exp.raw >= 0).all())  # a sum of ReLUs
        True
    """

    needs = Needs.LAYER_GRADIENTS

    def maps(self, cap: Capture) -> np.ndarray:
        return np.maximum(cap.grads * cap.activations, 0)
