"""RefineCAM (pytorch-grad-cam 1.5.7's RefineCAM): CAMs of several layers multiplied together.

With ``target_layers=[...]`` on the explainer, each layer's heatmap (N, H, W) in [0, 1] comes from
the ``base`` CAM (default Grad-CAM++; ``options`` go to it); the product over layers, min-max
scaled, is the map. Deep layers say where the class is, early layers add resolution: the product
keeps detail only where both agree (it denoises early-layer maps). With one layer it is the base CAM.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import CamMethod, Capture, Needs, get_method, register


@register("refinecam")
class RefineCAM(CamMethod):
    needs = Needs.LAYER_GRADIENTS  # those of the default base; an instance takes its base's
    layers_combine = "product"

    def __init__(self, base: str = "gradcam++", **options):
        cls = get_method(base)
        if cls is RefineCAM or not issubclass(cls, CamMethod):
            raise OptionError(f"refinecam: base must be a CAM method (e.g. 'gradcam++', 'gradcam', 'layercam'); got {base!r}")
        self.inner = cls(**options)
        self.needs = cls.needs

    def compute(self, cap: Capture) -> np.ndarray:
        self.inner.eigen_smooth = self.eigen_smooth
        return self.inner.compute(cap)
