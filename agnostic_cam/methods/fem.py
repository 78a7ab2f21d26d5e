"""FEM, Feature Explanation Method (Fuad et al. 2020), forward-only on ONNX Runtime.

Per image and channel, positions above the k-sigma threshold mean + k * std (over (h, w)) form
a binary mask; w_c = the fraction of positions in the mask; cam = sum_c w_c * A_c.
Target-independent.
"""
import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("fem")
class FEM(CamMethod):
    """FEM, the Feature Explanation Method: channels weighted by their share of k-sigma outliers.

    Paper: K. A. A. Fuad, P.-E. Martin, R. Giot, R. Bourqui, J. Benois-Pineau and A. Zemmari,
    "Features Understanding in 3D CNNs for Actions Recognition in Video", IPTA 2020
    (hal-02963298).

    With A the target layer's activations (N, C, h, w), per image and channel:

        B_c = [A_c > mean_hw(A_c) + k * std_hw(A_c)]      (binary mask, (h, w))
        w_c = mean_hw(B_c)                                  (the share of positions in the mask)
        cam = relu(sum_c w_c * A_c)

    Target-independent and forward-only (runs on ONNX Runtime).

    Args:
        k (float): the number of standard deviations of the threshold; finite. Default 2.0.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="fem", k=1.0)
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

    needs = Needs.ACTIVATIONS

    def __init__(self, k: float = 2.0):
        if not np.isfinite(k):
            raise OptionError(f"fem: k (the number of standard deviations of the threshold) must be finite; got {k!r}")
        self.k = float(k)

    def weights(self, cap: Capture) -> np.ndarray:
        a, ax = cap.activations, cap.spatial_axes
        th = a.mean(axis=ax, keepdims=True) + self.k * a.std(axis=ax, keepdims=True)
        return (a > th).mean(axis=ax)
