"""KPCA-CAM (Karmani et al. 2024): Eigen-CAM with kernel PCA instead of linear PCA.

Per image, the centred (h*w, C) activation matrix goes through kernel PCA with one component
(scikit-learn's definitions; gamma None = 1 / C): the map is that component's projection.
Target-independent and forward-only (runs on ONNX Runtime, also for bare ONNX files).
"""
import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.methods.projection import KERNELS, kernel_projection


@register("kpcacam")
class KPCACAM(CamMethod):
    needs = Needs.ACTIVATIONS

    def __init__(self, kernel: str = "sigmoid", gamma: float | None = None, degree: int = 3, coef0: float = 1.0):
        if kernel not in KERNELS:
            raise OptionError(f"kpcacam: unknown kernel {kernel!r}; use one of {', '.join(map(repr, KERNELS))}")
        if gamma is not None and not (np.isfinite(gamma) and gamma > 0):
            raise OptionError(f"kpcacam: gamma must be a positive number or None (1 / channels); got {gamma!r}")
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, int(degree), float(coef0)

    def compute(self, cap: Capture) -> np.ndarray:
        return kernel_projection(cap.activations, self.kernel, self.gamma, self.degree, self.coef0)
