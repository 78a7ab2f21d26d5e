"""Layer-CAM (Jiang et al. 2021, eq. 5-6): cam = sum_c(relu(G) * A)."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("layercam")
class LayerCAM(CamMethod):
    """Layer-CAM: activations weighted position by position by their positive gradients.

    Paper: P.-T. Jiang, C.-B. Zhang, Q. Hou, M.-M. Cheng and Y. Wei, "LayerCAM: Exploring
    Hierarchical Class Activation Maps for Localization", IEEE Transactions on Image Processing
    30, 2021 (eq. 5-6).

    With A the target layer's activations (N, C, h, w) and G = dS/dA (S the target's score):

        cam = relu(sum_c relu(G_c) * A_c)

    Works on early layers too (finer maps); combine layers with ``target_layers=[...]``.

    Options: none of its own; ``eigen_smooth=False``, ``aug_smooth=False`` and
    ``batch_size=None``. Needs layer gradients.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="layercam")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

    needs = Needs.LAYER_GRADIENTS
    volumes = True

    def maps(self, cap: Capture) -> np.ndarray:
        return np.maximum(cap.grads, 0) * cap.activations
