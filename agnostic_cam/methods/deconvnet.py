"""Deconvnet (Zeiler & Fergus 2014, Sec. 2.1): the reconstruction passes each ReLU as a ReLU of the
backward signal, whatever the forward input: R_l = (R_(l+1) > 0) * R_(l+1). ``raw`` (N, C, H, W)."""
from agnostic_cam.methods.base import register
from agnostic_cam.methods.pixel import PixelMethod


@register("deconvnet")
class Deconvnet(PixelMethod):
    rule = "deconv"
