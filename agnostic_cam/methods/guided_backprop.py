"""Guided backpropagation (Springenberg et al. 2015, Fig. 1): the input gradient where every ReLU
passes only positive gradients, and only where its forward input was positive:
R_l = (f_l > 0) * (R_(l+1) > 0) * R_(l+1). ``raw`` (N, C, H, W) signed."""
from agnostic_cam.methods.base import register
from agnostic_cam.methods.pixel import PixelMethod


@register("guided_backprop")
class GuidedBackprop(PixelMethod):
    """Guided backpropagation: the input gradient with every ReLU passing positive gradients only,
    and only where its forward input was positive.

    Paper: J. T. Springenberg, A. Dosovitskiy, T. Brox and M. Riedmiller, "Striving for
    Simplicity: The All Convolutional Net", ICLR 2015 workshop, arXiv:1412.6806 (Fig. 1).

    Backward through each ReLU with forward input f_l, R_(l+1) the signal from above:

        R_l     = (f_l > 0) * (R_(l+1) > 0) * R_(l+1)
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
        >>> exp = ex.explain(x, method="guided_backprop")
        >>> exp.heatmap.shape, exp.raw.shape, exp.layer_used
        ((2, 32, 32), (2, 3, 32, 32), False)
        >>> float(exp.heatmap.max())
        1.0
    """

    rule = "guided"
