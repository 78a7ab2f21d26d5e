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
    """KPCA-CAM: Eigen-CAM with kernel PCA instead of linear PCA (no target, no gradient).

    Paper: S. Karmani, T. Sivakaran, G. Prasad, M. Ali, W. Yang and S. Tang, "KPCA-CAM: Visual
    Explainability of Deep Computer Vision Models using Kernel PCA", arXiv:2410.00267, 2024.

    With A the target layer's activations (N, C, h, w), per image: X = the (h*w, C) matrix of A
    centred over positions, K = k(X, X) the (h*w, h*w) kernel matrix, Kc = K centred (rows and
    columns), (lambda1, v1) its top eigenpair:

        cam = relu(sqrt(lambda1) * v1)             reshaped to (h, w)

    with scikit-learn's kernels: linear x.y, poly (gamma x.y + coef0)^degree, rbf
    exp(-gamma |x - y|^2), sigmoid tanh(gamma x.y + coef0), cosine x.y / (|x| |y|); the sign of v1
    makes its largest-magnitude entry positive (the result equals scikit-learn's
    ``KernelPCA(n_components=1).fit_transform``). Forward-only: runs on ONNX Runtime.

    Args:
        kernel (str): "linear", "poly", "rbf", "sigmoid" or "cosine". Default "sigmoid".
        gamma (float | None): the kernel coefficient; None means 1 / C. Default None.
        degree (int): the degree of the "poly" kernel. Default 3.
        coef0 (float): the constant term of "poly" and "sigmoid". Default 1.0.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="kpcacam", kernel="rbf")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

    needs = Needs.ACTIVATIONS

    def __init__(self, kernel: str = "sigmoid", gamma: float | None = None, degree: int = 3, coef0: float = 1.0):
        if kernel not in KERNELS:
            raise OptionError(f"kpcacam: unknown kernel {kernel!r}; use one of {', '.join(map(repr, KERNELS))}")
        if gamma is not None and not (np.isfinite(gamma) and gamma > 0):
            raise OptionError(f"kpcacam: gamma must be a positive number or None (1 / channels); got {gamma!r}")
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, int(degree), float(coef0)

    def compute(self, cap: Capture) -> np.ndarray:
        return kernel_projection(cap.activations, self.kernel, self.gamma, self.degree, self.coef0)
