"""KernelSHAP (Lundberg & Lee 2017, Theorem 2) over image segments, forward-only.

Players are the segments (a grid or a label map, see :mod:`agnostic_cam.methods.coalitions`);
v(z) is the target score with the segments outside coalition z set to the baseline. The Shapley
values phi solve the weighted least squares min sum_z pi(z) (v(z) - v(0) - z . phi)^2 with the
Shapley kernel pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|)), under the efficiency constraint
sum(phi) = v(1) - v(0) (the empty and full coalitions, whose kernel weight is infinite).

When ``samples`` >= 2^M - 2 every coalition is scored and the result is the exact Shapley values;
otherwise ``samples`` coalitions are drawn with sizes distributed as the kernel (then weighted
equally), from ``seed``. ``raw``: (N, H, W), each pixel carrying its segment's value.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from agnostic_cam.methods.base import register
from agnostic_cam.methods.coalitions import check_segments, label_maps, score_coalitions, to_pixels
from agnostic_cam.methods.perturb import LayerFreeMethod, baselines, check_baseline
from agnostic_cam.core.options import positive_int


def all_coalitions(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Every coalition but the empty and full ones (2^m - 2, m) and its Shapley kernel weight."""
    z = np.array([c for c in itertools.product((0, 1), repeat=m) if 0 < sum(c) < m], dtype=np.float64).reshape(-1, m)
    k = z.sum(axis=1).astype(int)
    w = (m - 1) / (np.array([math.comb(m, int(s)) for s in k]) * k * (m - k))
    return z, w


def sampled_coalitions(rng: np.random.Generator, m: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` coalitions with sizes drawn proportional to the kernel's mass per size; equal weights."""
    sizes = np.arange(1, m)
    mass = (m - 1) / (sizes * (m - sizes))
    k = rng.choice(sizes, size=count, p=mass / mass.sum())
    z = np.zeros((count, m))
    for row, s in enumerate(k):
        z[row, rng.choice(m, size=int(s), replace=False)] = 1.0
    return z, np.ones(count)


def constrained_wls(z: np.ndarray, v: np.ndarray, w: np.ndarray, v0: float, v1: float) -> np.ndarray:
    """phi (M,) minimising sum w (v - v0 - z.phi)^2 subject to sum(phi) = v1 - v0."""
    m = z.shape[1]
    if m == 1:
        return np.array([v1 - v0])
    y = v - v0 - z[:, -1] * (v1 - v0)
    X = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(w)[:, None]
    head, *_ = np.linalg.lstsq(X * sw, y * sw[:, 0], rcond=None)
    return np.append(head, (v1 - v0) - head.sum())


@register("kernelshap")
class KernelSHAP(LayerFreeMethod):
    """KernelSHAP: the Shapley values of image segments, fitted by weighted least squares.

    Paper: S. M. Lundberg and S.-I. Lee, "A Unified Approach to Interpreting Model Predictions",
    NeurIPS 2017, arXiv:1705.07874 (Theorem 2).

    Players are M segments (a grid or a label map); v(z) is the target's score with the segments
    outside coalition z in {0, 1}^M set to the baseline. The Shapley values phi (M,) solve

        min_phi sum_z pi(z) (v(z) - v(0) - z . phi)^2,   subject to sum(phi) = v(1) - v(0)
        pi(z)   = (M - 1) / (C(M, |z|) |z| (M - |z|))    (the Shapley kernel)

    When ``samples`` >= 2^M - 2 every coalition is scored (exact Shapley values); otherwise
    ``samples`` coalitions are drawn with sizes distributed as the kernel, from ``seed``.
    ``raw`` (N, H, W): each pixel carries its segment's phi; heatmap = relu(raw) / max.
    Layer-free and forward-only (runs on ONNX Runtime).

    Args:
        segments (int | numpy.ndarray): an int (a grid of about that many cells) or an int label
            map (H, W) or (N, H, W), e.g. superpixels. Default 16.
        samples (int): the number of coalitions scored. Default 1000.
        seed (int | None): the sampling seed. Default 0.
        baseline (float | str | numpy.ndarray): a number, "zero", "mean", "blur", or an array (one
            image or the batch, model layout). Default 0.0.
        batch_size (int | None): coalitions per forward pass; None uses the explainer's. Default None.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> exp = ex.explain(x, method="kernelshap", segments=4, samples=30)  # 2 x 2 grid: exact
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 32, 32))
        >>> phi = exp.raw[:, ::16, ::16].sum(axis=(1, 2))  # one pixel per segment
        >>> s0 = ex.predict(np.zeros_like(x))[[0, 1], exp.targets]  # the baseline's scores
        >>> np.allclose(phi, exp.scores - s0, atol=1e-5)  # efficiency: sum(phi) = v(1) - v(0)
        True
    """

    def __init__(self, segments=16, samples: int = 1000, seed: int | None = 0, baseline=0.0,
                 batch_size: int | None = None):
        self.segments = check_segments(segments)
        self.samples = positive_int("samples", samples, 1)
        self.seed = seed
        self.baseline = check_baseline(baseline)
        self.batch_size = None if batch_size is None else positive_int("batch_size", batch_size, 1)

    def compute(self, cap) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        base = baselines(cap, self.baseline)
        maps = label_maps(self.segments, cap.n, cap.input_size)
        out = np.zeros((cap.n, *cap.input_size))
        for i, labels in enumerate(maps):
            m = int(labels.max()) + 1
            exact = m <= 20 and self.samples >= 2 ** m - 2
            z, w = all_coalitions(m) if exact else sampled_coalitions(rng, m, self.samples)
            z_all = np.concatenate([np.zeros((1, m)), z])  # the empty coalition: v(0), the baseline's score
            v = score_coalitions(self, cap, i, z_all, labels, base[i], "KernelSHAP")
            phi = constrained_wls(z, v[1:], w, float(v[0]), float(cap.scores[i]))
            out[i] = to_pixels(phi, labels)
        return out.astype(np.float32)
