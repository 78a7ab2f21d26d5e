"""Image-specific class saliency (Simonyan et al. 2014, Sec. 3.1, eq. 4-5).

w = dS_c/dI at the image (vanilla gradient, ``raw``, signed, (N, C, H, W));
saliency M_ij = max_c |w_(c,i,j)|. ``sign='positive'`` / ``'negative'`` keeps only the positive /
negative part of the gradient (max over channels of relu(w) / relu(-w)).
"""
import numpy as np

from agnostic_cam.methods.base import register
from agnostic_cam.methods.pixel import SIGNS, PixelMethod, channel_saliency, scale_max
from agnostic_cam.errors import OptionError


@register("saliency")
class Saliency(PixelMethod):
    """Image-specific class saliency: the magnitude of the score's gradient with respect to the image.

    Paper: K. Simonyan, A. Vedaldi and A. Zisserman, "Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps", ICLR 2014 workshop,
    arXiv:1312.6034 (Sec. 3.1, eq. 4-5).

    With x the image (N, C, H, W) and S_k the target's score:

        raw  = w = dS_k/dx                         (N, C, H, W), signed, channel-first
        M_ij = max_c |w_(c,i,j)|                   (sign="abs")
        M_ij = max_c relu(w_(c,i,j))               (sign="positive"; relu(-w) for "negative")
        heatmap = M / max(M)                       per image

    ``raw`` is channel-first whatever the model's layout (``raw.transpose(0, 2, 3, 1)`` for
    channels-last). No target layer is used. Needs input gradients.

    Args:
        sign (str): "abs", "positive" or "negative": which part of the gradient the heatmap shows.
            Default "abs".

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="saliency")
        >>> exp.heatmap.shape, exp.raw.shape, exp.layer_used
        ((2, 32, 32), (2, 3, 32, 32), False)
        >>> float(exp.heatmap.max())
        1.0
    """

    volumes = True  # input gradients of a volume are a volume: raw (N, C, D, H, W)

    rule = "vanilla"

    def __init__(self, sign: str = "abs"):
        if sign not in SIGNS:
            raise OptionError(f"sign must be one of {SIGNS}; got {sign!r}")
        self.sign = sign

    def heatmap(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return scale_max(channel_saliency(raw, self.sign), ndim=len(size))
