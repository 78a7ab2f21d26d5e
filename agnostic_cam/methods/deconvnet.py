"""Deconvnet (Zeiler & Fergus 2014, Sec. 2.1): the reconstruction passes each ReLU as a ReLU of the
backward signal, whatever the forward input: R_l = (R_(l+1) > 0) * R_(l+1). ``raw`` (N, C, H, W)."""
from agnostic_cam.methods.base import register
from agnostic_cam.methods.pixel import PixelMethod


@register("deconvnet")
class Deconvnet(PixelMethod):
    """Deconvnet: the input "gradient" with every ReLU applied to the backward signal itself.

    Paper: M. D. Zeiler and R. Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014, arXiv:1311.2901 (Sec. 2.1).

    Backward through each ReLU, R_(l+1) the signal from above, whatever the forward input:

        R_l     = (R_(l+1) > 0) * R_(l+1)
        raw     = R_0                              (N, C, H, W), signed, channel-first
        heatmap = max_c |raw| / max(max_c |raw|)   per image

    The rule applies to the ReLU-family activations during the backward pass only; the model is not
    modified. A model with no ReLU is refused, one that mixes ReLUs with other activations too unless
    ``partial_rules=True`` (see :mod:`agnostic_cam.core.relu_policy`). Needs input gradients.
    Options: none of its own (``aug_smooth=False``, ``batch_size=None``).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="deconvnet")
        >>> exp.heatmap.shape, exp.raw.shape, exp.layer_used
        ((2, 32, 32), (2, 3, 32, 32), False)
        >>> float(exp.heatmap.max())
        1.0
    """

    rule = "deconv"
