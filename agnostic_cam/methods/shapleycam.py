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
    needs = Needs.HVP

    def weights(self, cap: Capture) -> np.ndarray:
        return (cap.grads - 0.5 * cap.hvp).mean(axis=cap.spatial_axes)
