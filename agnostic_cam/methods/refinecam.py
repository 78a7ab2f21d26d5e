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
    """RefineCAM: the CAMs of several layers multiplied together (a meta-method over any CAM).

    Paper: L. Domeniconi, A. Stramiglio, M. Lombardi and S. Salti, "How to Evaluate and Refine your
    CAM", arXiv:2605.14641, 2026; pytorch-grad-cam 1.5.7's ``RefineCAM``.

    With ``target_layers=[l_1, ..., l_L]`` on the explainer and H_l (N, H, W) in [0, 1] the
    heatmap of the ``base`` CAM at layer l:

        heatmap = minmax(prod_l H_l)

    Deep layers say where the class is, early layers add resolution: the product keeps detail
    only where both agree. With one layer it is the base CAM (the example checks it). Needs what
    its base needs.

    Args:
        base (str): the CAM method computed at each layer. Default "gradcam++".
        **options (Any): options of the base method.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> two = Explainer.from_torch(tiny_cnn(), target_layers=["relu1", "relu2"], progress=False)
        >>> exp = two.explain(x, method="refinecam")
        >>> exp.heatmap.shape, exp.layer
        ((2, 32, 32), 'relu1 * relu2')
        >>> np.array_equal(ex.explain(x, "refinecam").heatmap, ex.explain(x, "gradcam++").heatmap)
        True
    """

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
