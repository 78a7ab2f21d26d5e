"""Grad-CAM (Selvaraju et al. 2017, eq. 1): w_c = mean over (h, w) of dS/dA_c."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("gradcam")
class GradCAM(CamMethod):
    """Grad-CAM: the layer's channels weighted by their spatially averaged gradients.

    Paper: R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh and D. Batra, "Grad-CAM:
    Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017,
    arXiv:1610.02391 (eq. 1-2).

    With A the target layer's activations (N, C, h, w), S the target's score (N,) and
    G = dS/dA (N, C, h, w):

        w_c = mean_hw(G_c)                      (N, C)
        cam = relu(sum_c w_c * A_c)             (N, h, w)

    ``raw`` is the channel sum before the ReLU, at the layer's resolution; ``heatmap`` is the
    library's CAM post-processing (ReLU, min-max, bilinear resize to the input, min-max).
    Needs layer gradients (PyTorch, Keras, or ONNX with gradients).

    Options: none of its own; ``eigen_smooth=False`` (first principal component of w_c * A_c
    instead of their sum), ``aug_smooth=False`` and ``batch_size=None`` as every method.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="gradcam")
        >>> exp.heatmap.shape, exp.heatmap.dtype, exp.raw.shape
        ((2, 32, 32), dtype('float32'), (2, 16, 16))
        >>> round(float(exp.heatmap.min()), 3), round(float(exp.heatmap.max()), 3)
        (0.0, 1.0)
    """

    needs = Needs.LAYER_GRADIENTS
    volumes = True

    def weights(self, cap: Capture) -> np.ndarray:
        return cap.grads.mean(axis=cap.spatial_axes)
