"""Guided backpropagation (Springenberg et al. 2015, Fig. 1): the input gradient where every ReLU
passes only positive gradients, and only where its forward input was positive:
R_l = (f_l > 0) * (R_(l+1) > 0) * R_(l+1). ``raw`` (N, C, H, W) signed."""
from agnostic_cam.methods.base import register
from agnostic_cam.methods.pixel import PixelMethod


@register("guided_backprop")
class GuidedBackprop(PixelMethod):
    rule = "guided"
