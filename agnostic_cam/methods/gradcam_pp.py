"""Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with the exponential-score closed form).

alpha = G^2 / (2 G^2 + sum_hw(A) G^3 + 1e-6), alpha = 0 where G == 0; w_c = sum_hw(relu(G) alpha).
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("gradcam++")
class GradCAMPlusPlus(CamMethod):
    """Grad-CAM++: Grad-CAM with pixel-wise weights of the positive gradients.

    Paper: A. Chattopadhay, A. Sarkar, P. Howlader and V. N. Balasubramanian, "Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018,
    arXiv:1710.11063 (eq. 19, with the closed form of the higher derivatives for an exponential score).

    With A the target layer's activations (N, C, h, w) and G = dS/dA (S the target's score):

        alpha = G^2 / (2 G^2 + sum_hw(A) G^3 + 1e-6),   alpha = 0 where G == 0
        w_c   = sum_hw(relu(G_c) * alpha_c)
        cam   = relu(sum_c w_c * A_c)

    Options: none of its own; ``eigen_smooth=False``, ``aug_smooth=False`` and
    ``batch_size=None`` as every CAM. Needs layer gradients.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="gradcam++")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

    needs = Needs.LAYER_GRADIENTS
    volumes = True

    def weights(self, cap: Capture) -> np.ndarray:
        g, a, ax = cap.grads, cap.activations, cap.spatial_axes
        g2 = g**2
        denom = 2 * g2 + a.sum(axis=ax, keepdims=True) * g2 * g + 1e-6
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=g != 0)
        return (alpha * np.maximum(g, 0)).sum(axis=ax)
