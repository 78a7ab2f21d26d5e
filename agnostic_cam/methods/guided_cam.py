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


GUIDED_DOC = """Guided {title}: guided backpropagation multiplied by the upsampled {title} map.

    Paper: R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh and D. Batra, "Grad-CAM:
    Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017,
    arXiv:1610.02391 (Sec. 3.1, Guided Grad-CAM); guided backpropagation: J. T. Springenberg et al.,
    ICLR 2015 workshop, arXiv:1412.6806; {title}: {cite}.

    With R (N, C, H, W) the guided-backprop input gradient and cam (N, h, w) the {title} map
    of the target layer ({eq}):

        raw     = R * up(cam)                      (N, C, H, W), signed, channel-first
        heatmap = max_c |raw| / max(max_c |raw|)   per image

    By default up(cam) is the CAM method's own heatmap (ReLU, min-max, bilinear resize with
    half-pixel centres, min-max; the example checks it). ``normalize=False`` multiplies by
    relu(cam) resized without min-max scaling and ``upsample="nearest"`` resizes by nearest
    neighbour (source index floor(i * h / H)): with both, the result follows Captum's
    ``GuidedGradCam``. Needs input gradients and what {cam!r} needs.

    Args:
        upsample (str): "bilinear" or "nearest". Default "bilinear".
        normalize (bool): min-max scale the CAM before and after resizing. Default True.
        **cam_options (Any): options of the {cam!r} method{cam_options}.

    Examples:
        >>> import numpy as np
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="{name}")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 3, 32, 32))
        >>> guided, cam = ex.explain(x, "guided_backprop").raw, ex.explain(x, "{cam}").heatmap
        >>> np.allclose(exp.raw, guided * cam[:, None])
        True
    """

GUIDED = (  # (name, CAM method, class name, title, the CAM's paper, its weights)
    ("guided_gradcam", "gradcam", "GuidedGradCAM", "Grad-CAM", "Selvaraju et al., ICCV 2017",
     "w_c = mean_hw(G_c), G = dS/dA"),
    ("guided_gradcam++", "gradcam++", "GuidedGradCAMPlusPlus", "Grad-CAM++",
     "A. Chattopadhay et al., WACV 2018, arXiv:1710.11063", "w_c = sum_hw(relu(G_c) alpha_c), G = dS/dA"),
    ("guided_scorecam", "scorecam", "GuidedScoreCAM", "Score-CAM",
     "H. Wang et al., CVPR Workshops 2020, arXiv:1910.01279", "w = softmax_c(S(x * minmax(up(A_c))))"),
    ("guided_layercam", "layercam", "GuidedLayerCAM", "Layer-CAM",
     "P.-T. Jiang et al., IEEE TIP 2021", "cam = sum_c relu(G_c) * A_c, G = dS/dA"),
)
CAM_OPTIONS = {"scorecam": " (``batch_size``, ``dedup``)"}

for _name, _cam, _cls, _title, _cite, _eq in GUIDED:  # module attributes too, so docs and imports find them
    globals()[_cls] = register(_name)(type(_cls, (GuidedCAM,), {
        "cam": _cam, "needs": get_method(_cam).needs | Needs.INPUT_GRADIENTS, "__module__": __name__,
        "__doc__": GUIDED_DOC.format(name=_name, cam=_cam, title=_title, cite=_cite, eq=_eq,
                                     cam_options=CAM_OPTIONS.get(_cam, " (it takes none)"))}))
