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
    rule = "vanilla"

    def __init__(self, sign: str = "abs"):
        if sign not in SIGNS:
            raise OptionError(f"sign must be one of {SIGNS}; got {sign!r}")
        self.sign = sign

    def heatmap(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return scale_max(channel_saliency(raw, self.sign))
