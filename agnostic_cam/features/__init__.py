"""Feature visualisation: what a layer or a filter responds to (framework-neutral NumPy).

Every technique is a function of one tensor ``A`` (a layer's activation, or the model output)
whose gradient ``dObj/dA`` is computed here from ``A``; the adapter's ``vjp`` turns it into
``dObj/dx``. Use them through :class:`agnostic_cam.Explainer` (``ex.feature_maps(...)``, ...).
"""
from agnostic_cam.features.class_model import class_model
from agnostic_cam.features.deconv import deconv_reconstruction
from agnostic_cam.features.deep_dream import deep_dream
from agnostic_cam.features.filter_max import filter_maximisation
from agnostic_cam.features.invert import invert
from agnostic_cam.features.maps import feature_maps, filters
from agnostic_cam.features.optimise import Ascent, ascend
from agnostic_cam.features.result import FeatureMaps, Filters, Visualisation

__all__ = ["Ascent", "FeatureMaps", "Filters", "Visualisation", "ascend", "class_model", "deconv_reconstruction",
           "deep_dream", "feature_maps", "filter_maximisation", "filters", "invert"]
