"""Guided CAMs (Selvaraju et al. 2017, Sec. 3.1 "Guided Grad-CAM"): guided backpropagation
multiplied element-wise by a CAM upsampled to the input size.

raw = G * up(cam), (N, C, H, W), with G the guided-backprop input gradient (N, C, H, W).
By default ``up`` is the library's CAM post-processing (DESIGN.md: ReLU, min-max, bilinear resize
with half-pixel centres, min-max), so ``up(cam)`` is exactly the CAM method's heatmap.
``normalize=False`` multiplies by relu(cam) resized without min-max scaling, and
``upsample='nearest'`` resizes by nearest neighbour (``floor(i * h / H)``): with both, the result
follows Captum's ``GuidedGradCam`` (relu'd Grad-CAM, nearest interpolation by default).
Other options go to the CAM method (e.g. ``batch_size`` for Score-CAM).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from agnostic_cam.core.imaging import cam_to_heatmap, minmax, resize_bilinear
from agnostic_cam.methods import gradcam, gradcam_pp, layercam, scorecam  # noqa: F401 - registers the CAMs
from agnostic_cam.methods.base import Capture, Needs, get_method, register
from agnostic_cam.methods.pixel import PixelMethod, to_chw
from agnostic_cam.errors import OptionError

UPSAMPLE = ("bilinear", "nearest")


def resize_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) -> (..., H, W) nearest neighbour, source index floor(i * h / H) (PyTorch 'nearest')."""
    h, w = maps.shape[-2:]
    iy = (np.arange(size[0]) * h) // size[0]
    ix = (np.arange(size[1]) * w) // size[1]
    return np.ascontiguousarray(maps[..., iy[:, None], ix[None, :]], dtype=np.float32)


class GuidedCAM(PixelMethod):
    """Guided backprop x the upsampled CAM of method ``cam``."""

    cam: ClassVar[str] = ""
    rule = "guided"
    smoothable = False

    def __init__(self, upsample: str = "bilinear", normalize: bool = True, **cam_options):
        if upsample not in UPSAMPLE:
            raise OptionError(f"upsample must be one of {UPSAMPLE}; got {upsample!r}")
        self.upsample, self.normalize = upsample, bool(normalize)
        self.inner = get_method(self.cam)(**cam_options)

    def upsampled_cam(self, cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(N, h, w) CAM -> (N, H, W) weights for the guided gradient."""
        if self.normalize and self.upsample == "bilinear":
            return cam_to_heatmap(cam, size)
        cam = np.maximum(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0)
        if self.normalize:
            return minmax(np.maximum(resize_nearest(minmax(cam), size), 0))
        return resize_bilinear(cam, size) if self.upsample == "bilinear" else resize_nearest(cam, size)

    def compute(self, cap: Capture) -> np.ndarray:
        up = self.upsampled_cam(self.inner.compute(cap), cap.input_size)
        return to_chw(cap.input_grads, cap.layout) * up[:, None]


for _name, _cam, _cls in (("guided_gradcam", "gradcam", "GuidedGradCAM"),
                          ("guided_gradcam++", "gradcam++", "GuidedGradCAMPlusPlus"),
                          ("guided_scorecam", "scorecam", "GuidedScoreCAM"),
                          ("guided_layercam", "layercam", "GuidedLayerCAM")):
    register(_name)(type(_cls, (GuidedCAM,), {
        "cam": _cam, "needs": get_method(_cam).needs | Needs.INPUT_GRADIENTS, "__module__": __name__,
        "__doc__": f"Guided backprop x the upsampled {_cam} map (see the module docstring)."}))
