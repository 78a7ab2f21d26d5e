"""HiResCAM (Draelos & Carin 2020): cam = sum_c(G * A), element-wise, no pooling of gradients."""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("hirescam")
class HiResCAM(CamMethod):
    """HiResCAM: the element-wise product of gradients and activations, summed over channels.

    Paper: R. L. Draelos and L. Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations
    of convolutional neural networks", arXiv:2011.08891, 2020.

    With A the target layer's activations (N, C, h, w) and G = dS/dA (S the target's score),
    no pooling of the gradients:

        cam = relu(sum_c G_c * A_c)

    When the layer is followed by global average pooling and a linear head, G is constant over
    (h, w) and HiResCAM equals Grad-CAM (as the example shows).

    Options: none of its own; ``eigen_smooth=False`` (first principal component of G * A),
    ``aug_smooth=False`` and ``batch_size=None``. Needs layer gradients.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> exp = ex.explain(x, method="hirescam")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> np.allclose(exp.heatmap, ex.explain(x, "gradcam").heatmap, atol=1e-5)  # GAP + linear head
        True
    """

    needs = Needs.LAYER_GRADIENTS
    volumes = True

    def maps(self, cap: Capture) -> np.ndarray:
        return cap.grads * cap.activations
