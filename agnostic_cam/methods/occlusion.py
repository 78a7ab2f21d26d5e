"""Occlusion (Zeiler & Fergus 2014, Sec. 4.2), as Captum's ``Occlusion`` with a window over all channels.

A window of ``window`` (h, w) pixels slides with ``stride`` (h, w); window k replaces its pixels by
the baseline and scores the image: d_k = y - y_k. A pixel's attribution is the mean of d_k over the
windows covering it. Windows start at multiples of the stride, ``ceil((H - h) / s) + 1`` per axis,
the last one cut at the border (Captum's placement), so every pixel is covered.

Options: ``window`` (default: an eighth of the shorter side), ``stride`` (default: half the window),
``baseline`` (0.0, a number, 'mean', 'blur', or an array: one image or the batch, model layout),
``batch_size`` (rows per forward pass). ``raw``: (N, H, W) signed attributions.
"""
from __future__ import annotations

import math

import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import register
from agnostic_cam.methods.perturb import LayerFreeMethod, baselines, batched, check_baseline, check_pair
from agnostic_cam.core.options import positive_int


def positions(size: int, window: int, stride: int) -> np.ndarray:
    """Window starts along one axis (Captum's Occlusion placement)."""
    return np.arange(math.ceil((size - window) / stride) + 1) * stride


@register("occlusion")
class Occlusion(LayerFreeMethod):
    """Occlusion: the score drop when a sliding window of the image is replaced by a baseline.

    Paper: M. D. Zeiler and R. Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014, arXiv:1311.2901 (Sec. 4.2); placed as Captum's ``Occlusion`` with a window over
    all channels.

    With y the target's score on the image and y_k on the image whose window k (``window`` pixels,
    starting at multiples of ``stride``, ceil((H - h) / s) + 1 per axis, the last one cut at the
    border) is replaced by the baseline:

        d_k     = y - y_k
        raw_ij  = mean of d_k over the windows k that cover pixel (i, j)      (N, H, W), signed
        heatmap = relu(raw) / max(relu(raw))                                  per image

    Layer-free and forward-only (runs on ONNX Runtime).

    Args:
        window (int | tuple[int, int] | None): the window (h, w); None: an eighth of the shorter
            side. Default None.
        stride (int | tuple[int, int] | None): the step (h, w), at most the window; None: half the
            window. Default None.
        baseline (float | str | numpy.ndarray): a number, "zero", "mean", "blur", or an array (one
            image or the batch, model layout). Default 0.0.
        batch_size (int | None): occluded images per forward pass; None uses the explainer's.
            Default None.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="occlusion", window=8, stride=4)
        >>> exp.heatmap.shape, exp.raw.shape, exp.layer_used
        ((2, 32, 32), (2, 32, 32), False)
        >>> float(exp.heatmap.max())
        1.0
    """

    def __init__(self, window: int | tuple[int, int] | None = None, stride: int | tuple[int, int] | None = None,
                 baseline=0.0, batch_size: int | None = None):
        self.window = check_pair("window", window)
        self.stride = check_pair("stride", stride)
        self.baseline = check_baseline(baseline)
        self.batch_size = None if batch_size is None else positive_int("batch_size", batch_size, 1)

    def compute(self, cap) -> np.ndarray:
        H, W = cap.input_size
        wh, ww = self.window or (max(1, min(H, W) // 8),) * 2
        sh, sw = self.stride or (max(1, wh // 2), max(1, ww // 2))
        if wh > H or ww > W:
            raise OptionError(f"window {(wh, ww)} is larger than the images {(H, W)}")
        if (sh > wh and wh < H) or (sw > ww and ww < W):
            raise OptionError(f"stride {(sh, sw)} is larger than the window {(wh, ww)}: some pixels would never be "
                              "occluded; use a stride <= the window")
        ys, xs = positions(H, wh, sh), positions(W, ww, sw)
        starts = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
        counts = np.zeros((H, W))
        for y, x in starts:
            counts[y:y + wh, x:x + ww] += 1

        def masks_of(lo: int, hi: int) -> np.ndarray:
            m = np.ones((hi - lo, H, W), np.float32)
            for j, (y, x) in enumerate(starts[lo:hi]):
                m[j, y:y + wh, x:x + ww] = 0.0
            return m

        base = baselines(cap, self.baseline)
        out = np.zeros((cap.n, H, W))
        for i in range(cap.n):
            k = 0
            for m, s in self.scores(cap, i, batched(masks_of, len(starts), self.rows(cap)), len(starts), base[i],
                                    "Occlusion"):
                for d in cap.scores[i] - s:
                    y, x = starts[k]
                    out[i, y:y + wh, x:x + ww] += d
                    k += 1
        return (out / counts).astype(np.float32)
