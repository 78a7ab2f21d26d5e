"""Method registry. Importing this package registers every built-in method (NumPy only)."""
from agnostic_cam.methods import (  # noqa: F401  - imported to register
    ablationcam,
    cam,
    eigencam,
    gradcam,
    gradcam_pp,
    hirescam,
    layercam,
    scorecam,
    xgradcam,
)
from agnostic_cam.methods.base import CamMethod, LayerCapture, Method, Needs, get_method, register, registry

__all__ = ["CamMethod", "LayerCapture", "Method", "Needs", "get_method", "register", "registry"]
