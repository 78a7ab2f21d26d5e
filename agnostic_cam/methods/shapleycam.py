"""ShapleyCAM (Cai et al. 2025, arXiv:2501.06261): Grad-CAM weights corrected by the Hessian.

A second-order Taylor view of the score's Shapley value gives w_c = mean_hw(G - 1/2 H A)_c with
G = dS/dA and H A = d/dA <G, A> the Hessian-vector product with the activations (a double backward,
``Needs.HVP``). On layers followed only by piecewise-linear operations (ReLU, pooling, linear
heads) H A = 0 and ShapleyCAM equals Grad-CAM.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("shapleycam")
class ShapleyCAM(CamMethod):
    """ShapleyCAM: Grad-CAM weights corrected by a Hessian-vector product.

    Paper: H. Cai, "CAMs as Shapley Value-based Explainers", arXiv:2501.06261, 2025.

    A second-order Taylor view of the score's Shapley value. With A the target layer's
    activations (N, C, h, w), G = dS/dA (S the target's score) and H A = d<G, A>/dA the
    Hessian-vector product with the activations (a double backward):

        w_c = mean_hw(G_c - 1/2 (H A)_c)
        cam = relu(sum_c w_c * A_c)

    On layers followed only by piecewise-linear operations (ReLU, pooling, linear heads) H A = 0
    and ShapleyCAM equals Grad-CAM (as in the example). Needs the Hessian-vector product:
    PyTorch, Keras, or ONNX with onnx-grad.

    Options: none of its own; ``eigen_smooth=False``, ``aug_smooth=False`` and ``batch_size=None``.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> exp = ex.explain(x, method="shapleycam")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> np.allclose(exp.heatmap, ex.explain(x, "gradcam").heatmap)  # ReLU network: H A = 0
        True
    """

    needs = Needs.HVP

    def weights(self, cap: Capture) -> np.ndarray:
        return (cap.grads - 0.5 * cap.hvp).mean(axis=cap.spatial_axes)
