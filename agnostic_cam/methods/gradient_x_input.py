"""Gradient x input (Shrikumar et al. 2016): raw = x * dS/dx, element-wise, (N, C, H, W)."""
import numpy as np

from agnostic_cam.methods.base import register
from agnostic_cam.methods.pixel import PixelMethod


@register("gradient_x_input")
class GradientXInput(PixelMethod):
    """Gradient x input: the image times the score's gradient, element by element.

    Paper: A. Shrikumar, P. Greenside, A. Shcherbina and A. Kundaje, "Not Just a Black Box: Learning
    Important Features Through Propagating Activation Differences", arXiv:1605.01713, 2016.

    With x the image (N, C, H, W) and S the target's score:

        raw     = x * dS/dx                        (N, C, H, W), signed, channel-first
        heatmap = max_c |raw| / max(max_c |raw|)   per image

    No target layer is used. Needs input gradients. Options: none of its own
    (``aug_smooth=False``, ``batch_size=None``); as ``smoothgrad``'s ``base`` it is averaged
    over noisy copies.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> exp = ex.explain(x, method="gradient_x_input")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 3, 32, 32))
        >>> np.allclose(exp.raw, x * ex.explain(x, "saliency").raw)  # saliency's raw is dS/dx
        True
    """

    volumes = True  # input gradients of a volume are a volume: raw (N, C, D, H, W)

    rule = "vanilla"

    def from_grads(self, inputs: np.ndarray, grads: np.ndarray) -> np.ndarray:
        return inputs * grads
