"""XGrad-CAM (Fu et al. 2020, eq. 9): w_c = sum_hw(G * A / (sum_hw(A) + 1e-7))."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("xgradcam")
class XGradCAM(CamMethod):
    """XGrad-CAM: gradients weighted by the normalised activations (axiom-based Grad-CAM).

    Paper: R. Fu, Q. Hu, X. Dong, Y. Guo, Y. Gao and B. Li, "Axiom-based Grad-CAM: Towards Accurate
    Visualization and Explanation of CNNs", BMVC 2020, arXiv:2008.02312 (eq. 9).

    With A the target layer's activations (N, C, h, w) and G = dS/dA (S the target's score):

        w_c = sum_hw(G_c * A_c / (sum_hw(A_c) + 1e-7))
        cam = relu(sum_c w_c * A_c)

    Options: none of its own; ``eigen_smooth=False``, ``aug_smooth=False`` and
    ``batch_size=None`` as every CAM. Needs layer gradients.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="xgradcam")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

    needs = Needs.LAYER_GRADIENTS
    volumes = True

    def weights(self, cap: Capture) -> np.ndarray:
        a, ax = cap.activations, cap.spatial_axes
        return (cap.grads * a / (a.sum(axis=ax, keepdims=True) + 1e-7)).sum(axis=ax)
