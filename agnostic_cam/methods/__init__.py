"""Method registry. Importing this package registers every built-in method (NumPy only)."""
from agnostic_cam.methods import (  # noqa: F401  - imported to register
    ablationcam,
    cam,
    deconvnet,
    eigencam,
    eigengradcam,
    fem,
    finercam,
    fullgrad,
    gradcam,
    gradcam_elementwise,
    gradcam_pp,
    gradient_x_input,
    guided_backprop,
    guided_cam,
    hirescam,
    integrated_gradients,
    kpcacam,
    layercam,
    randomcam,
    refinecam,
    saliency,
    scorecam,
    segeigencam,
    sess,
    shapleycam,
    smoothgrad,
    xgradcam,
)
from agnostic_cam.methods.base import CamMethod, Capture, LayerCapture, Method, Needs, get_method, register, registry

__all__ = ["CamMethod", "Capture", "LayerCapture", "Method", "Needs", "get_method", "register", "registry"]
