"""Finer-CAM (Zhang et al. 2025, arXiv:2501.11309): Grad-CAM of a target that contrasts the class
with its most similar classes, pytorch-grad-cam 1.5.7's definition (``FinerCAM`` with
``FinerWeightedTarget``).

For main class m (the target; None: top-1) and comparison classes J (the classes ranked
``comparison_categories`` (default 1, 2, 3) by |y_k - y_m|, nearest first), with p = softmax(y):
  S = sum_{j in J} p_j (y_m - alpha y_j) / (sum_{j in J} p_j + 1e-9)
and w_c = mean_hw(dS/dA_c). The gradient of S (softmax included) is exact: S is replaced by its
first-order expansion at the model's output, a linear target sum_k (dS/dy_k) y_k + const whose
value and gradient equal S's, so every framework differentiates it with its own autograd.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.targets import TargetSpec


class LinearTarget:
    """Score y @ coef[i] + offset[i] of row i; works on NumPy arrays and torch / TF tensors."""

    def __init__(self, coef: np.ndarray, offset: np.ndarray, classes: np.ndarray):
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.offset = np.asarray(offset, dtype=np.float32)
        self.classes = classes  # the explained (main) class of each image, for the Explanation

    def __call__(self, out):
        coef, ones, off = self.coef, np.ones((self.coef.shape[1], 1), np.float32), self.offset
        if out.shape[0] != coef.shape[0]:
            raise OptionError("finercam's target applies to the batch it was built for")
        if hasattr(out, "new_tensor"):  # torch: constants as tensors on the output's device
            coef, ones, off = out.new_tensor(coef), out.new_tensor(ones), out.new_tensor(off)
        return ((out * coef) @ ones)[:, 0] + off


def finer_score(y: np.ndarray, main: np.ndarray, comp: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """S (N,) and dS/dy (N, K) for outputs y (N, K), main classes (N,), comparison classes (N, J)."""
    y = y.astype(np.float64)
    n = np.arange(len(y))[:, None]
    p = np.exp(y - y.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    pj, yj, ym = p[n, comp], y[n, comp], y[np.arange(len(y)), main][:, None]
    u = ym - alpha * yj
    num, den = (pj * u).sum(axis=1), pj.sum(axis=1) + 1e-9
    # d num / dy_k and d den / dy_k, with dp_j/dy_k = p_j (delta_jk - p_k)
    dnum = -p * num[:, None]
    dden = -p * (den - 1e-9)[:, None]
    np.add.at(dnum, (n, comp), pj * u - alpha * pj)
    np.add.at(dden, (n, comp), pj)
    dnum[np.arange(len(y)), main] += pj.sum(axis=1)
    s = num / den
    return s, (dnum * den[:, None] - num[:, None] * dden) / den[:, None] ** 2


@register("finercam")
class FinerCAM(CamMethod):
    """Finer-CAM: Grad-CAM of a score that contrasts the class with its most similar classes.

    Paper: Z. Zhang, J. Gu, A. Chowdhury, Z. Mai, D. Carlyn, T. Berger-Wolf, Y. Su and W.-L. Chao,
    "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual Explanation", CVPR 2025,
    arXiv:2501.11309; pytorch-grad-cam 1.5.7's definition (``FinerCAM``, ``FinerWeightedTarget``).

    With y the model's outputs (N, K), p = softmax(y), m the main class (the target; None: top-1)
    and J the classes ranked ``comparison_categories`` by |y_k - y_m| (1 = the nearest):

        S   = sum_{j in J} p_j (y_m - alpha y_j) / (sum_{j in J} p_j + 1e-9)
        w_c = mean_hw(dS/dA_c)
        cam = relu(sum_c w_c * A_c)

    with A the target layer's activations (N, C, h, w). The gradient of S, softmax included, is
    exact: S is replaced by its first-order expansion at the model's output (a linear target with
    the same value and gradient), so every framework differentiates it with its own autograd.
    ``exp.targets`` are the main classes; ``exp.scores`` the values of S. Targets must be class
    indices (int, list of ints or None).

    Args:
        alpha (float): the weight of the comparison classes' scores. Default 1.0.
        comparison_categories (tuple[int, ...]): ranks >= 1 of the compared classes, nearest first.
            Default (1, 2, 3).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="finercam", alpha=0.6, comparison_categories=(1, 2))
        >>> exp.heatmap.shape, exp.raw.shape, exp.targets.shape
        ((2, 32, 32), (2, 16, 16), (2,))
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

    needs = Needs.LAYER_GRADIENTS | Needs.FORWARD

    def __init__(self, alpha: float = 1.0, comparison_categories: tuple[int, ...] | list[int] = (1, 2, 3)):
        comp = list(comparison_categories)
        if not comp or any(not isinstance(c, (int, np.integer)) or c < 1 for c in comp):
            raise OptionError("finercam: comparison_categories are ranks >= 1 of the classes most similar to the "
                              f"target (1 = the nearest); got {comparison_categories!r}")
        self.alpha, self.ranks = float(alpha), comp

    def target_for(self, predict, target) -> LinearTarget:
        """The linear target whose gradient is dS/dy at the outputs ``predict()`` (N, K) for the user's ``target``."""
        outputs = predict()
        spec = TargetSpec(target, outputs.shape[0])
        main = spec.indices(outputs)
        if main is None:
            raise OptionError("finercam takes class-index targets (int, list of ints or None), not a callable")
        k = outputs.shape[1]
        ranks = [r for r in self.ranks if r < k]
        if not ranks:
            raise OptionError(f"finercam: the model has {k} classes, too few for comparison ranks {self.ranks}")
        dist = np.abs(outputs - outputs[np.arange(len(main)), main][:, None])
        dist[np.arange(len(main)), main] = -1  # the main class first, whatever ties
        comp = np.argsort(dist, axis=1, kind="stable")[:, ranks]
        s, grad = finer_score(outputs, main, comp, self.alpha)
        return LinearTarget(grad, s - (grad * outputs.astype(np.float64)).sum(axis=1), main)

    def weights(self, cap: Capture) -> np.ndarray:
        return cap.grads.mean(axis=cap.spatial_axes)
