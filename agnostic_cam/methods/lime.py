"""LIME (Ribeiro et al. 2016, eq. 1-2) over image segments, forward-only, as the ``lime`` package's
image explainer defines it.

``samples`` coalitions z (each segment kept with probability 1/2; the first is the whole image) are
scored; a weighted ridge regression (``alpha``, with intercept) of the scores on z is fitted with
weights pi(z) = sqrt(exp(-d(z)^2 / kernel_width^2)), d the cosine distance between z and the
all-ones coalition. The coefficients are the segments' attributions. ``raw``: (N, H, W).
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import register
from agnostic_cam.methods.coalitions import check_segments, label_maps, score_coalitions, to_pixels
from agnostic_cam.methods.perturb import LayerFreeMethod, baselines, check_baseline
from agnostic_cam.core.options import positive_int


def cosine_distance_to_ones(z: np.ndarray) -> np.ndarray:
    """1 - cos(z, 1) per row; 1 for the empty coalition (as scikit-learn's pairwise cosine distance)."""
    k = z.sum(axis=1)
    return np.where(k > 0, 1 - np.sqrt(k / z.shape[1]), 1.0)


def weighted_ridge(z: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """Coefficients (M,) of ridge regression with an unpenalised intercept and sample weights w."""
    wn = w / w.sum()
    zc = z - wn @ z
    yc = y - wn @ y
    a = (zc * w[:, None]).T @ zc + alpha * np.eye(z.shape[1])
    return np.linalg.solve(a, (zc * w[:, None]).T @ yc)


@register("lime")
class LIME(LayerFreeMethod):
    """LIME: a weighted linear model of the score on which image segments are kept.

    Paper: M. T. Ribeiro, S. Singh and C. Guestrin, "'Why Should I Trust You?': Explaining the
    Predictions of Any Classifier", KDD 2016, arXiv:1602.04938 (eq. 1-2); as the ``lime``
    package's image explainer defines it.

    ``samples`` coalitions z in {0, 1}^M (each of the M segments kept with probability 1/2; the
    first is the whole image) are scored: v(z) is the target's score with the dropped segments
    set to the baseline. The attributions are the coefficients beta of the weighted ridge
    regression (with intercept)

        min_(beta, b) sum_z pi(z) (v(z) - b - z . beta)^2 + alpha |beta|^2
        pi(z) = sqrt(exp(-d(z)^2 / kernel_width^2)),   d(z) = 1 - cos(z, 1)

    ``raw`` (N, H, W): each pixel carries its segment's coefficient; heatmap = relu(raw) / max.
    Layer-free and forward-only (runs on ONNX Runtime).

    Args:
        segments (int | numpy.ndarray): an int (a grid of about that many cells) or an int label
            map (H, W) or (N, H, W), e.g. superpixels. Default 16.
        samples (int): the number of coalitions scored (>= 2). Default 1000.
        seed (int | None): the sampling seed. Default 0.
        kernel_width (float): the width of the proximity kernel. Default 0.25.
        alpha (float): the ridge penalty (>= 0). Default 1.0.
        baseline (float | str | numpy.ndarray): a number, "zero", "mean", "blur", or an array (one
            image or the batch, model layout). Default 0.0.
        batch_size (int | None): coalitions per forward pass; None uses the explainer's. Default None.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="lime", segments=4, samples=30)
        >>> exp.heatmap.shape, exp.raw.shape, exp.layer_used
        ((2, 32, 32), (2, 32, 32), False)
        >>> float(exp.heatmap.max())
        1.0
    """

    def __init__(self, segments=16, samples: int = 1000, seed: int | None = 0, kernel_width: float = 0.25,
                 alpha: float = 1.0, baseline=0.0, batch_size: int | None = None):
        self.segments = check_segments(segments)
        self.samples = positive_int("samples", samples, 2)
        self.seed = seed
        for name, v in (("kernel_width", kernel_width), ("alpha", alpha)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 and not (name == "alpha" and v == 0):
                raise OptionError(f"{name} must be a positive number; got {v!r}")
        self.kernel_width, self.alpha = float(kernel_width), float(alpha)
        self.baseline = check_baseline(baseline)
        self.batch_size = None if batch_size is None else positive_int("batch_size", batch_size, 1)

    def compute(self, cap) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        base = baselines(cap, self.baseline)
        out = np.zeros((cap.n, *cap.input_size))
        for i, labels in enumerate(label_maps(self.segments, cap.n, cap.input_size)):
            m = int(labels.max()) + 1
            z = rng.integers(0, 2, (self.samples, m)).astype(np.float64)
            z[0] = 1.0
            v = score_coalitions(self, cap, i, z, labels, base[i], "LIME")
            w = np.sqrt(np.exp(-cosine_distance_to_ones(z) ** 2 / self.kernel_width ** 2))
            out[i] = to_pixels(weighted_ridge(z, v, w, self.alpha), labels)
        return out.astype(np.float32)
