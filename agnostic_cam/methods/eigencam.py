"""Eigen-CAM (Muhammad & Yeasin 2020): projection of the activations on their first principal component.

Per image, the (h*w, C) activation matrix is centred over positions and projected on its first
right singular vector. The sign of a singular vector is arbitrary; we choose it so the map
correlates positively with the channel-mean activation, so the map highlights where the layer
is active. Target-independent, forward-only (runs on ONNX Runtime).
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.methods.projection import first_component_projection

__all__ = ["EigenCAM", "first_component_projection"]


@register("eigencam")
class EigenCAM(CamMethod):
    """Eigen-CAM: the activations projected on their first principal component (no target, no gradient).

    Paper: M. B. Muhammad and M. Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components", IJCNN 2020, arXiv:2008.00299.

    With A the target layer's activations (N, C, h, w), per image: M = the (h*w, C) matrix of A
    centred over positions (M = A - mean_hw(A)), M = U S V^T its SVD, v1 = V[:, 0]:

        cam = relu(M v1)              reshaped to (h, w)

    The sign of v1 is arbitrary; it is chosen so the map correlates positively with the channel
    mean of A (where that mean map is flat: so the map's largest-magnitude value is positive). The map
    does not depend on the target: forward-only, it runs on ONNX Runtime (bare ONNX files too).

    Options: none of its own (``aug_smooth=False``, ``batch_size=None``; ``eigen_smooth`` leaves
    it unchanged, it is already a projection).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> exp = ex.explain(x, method="eigencam")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> np.array_equal(exp.heatmap, ex.explain(x, "eigencam", target=0).heatmap)  # target-free
        True
    """

    needs = Needs.ACTIVATIONS
    volumes = True

    def compute(self, cap: Capture) -> np.ndarray:
        a = cap.activations.astype(np.float64)  # scale: |projection terms| <= the channel vector's norm
        self.scale = np.sqrt((a ** 2).sum(axis=1)).reshape(a.shape[0], -1).max(axis=1)
        return first_component_projection(cap.activations)
