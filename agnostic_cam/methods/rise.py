"""RISE (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation", Sec. 3).

S = 1 / (M p) * sum_i f(I * M_i) M_i (eq. 6), with M random masks made as in Sec. 3.2: a binary
``cells`` x ``cells`` grid, each cell 1 with probability ``p``; bilinearly upsampled to
(cells + 1) * ceil(H / cells) by (cells + 1) * ceil(W / cells); cropped to H x W at a random shift
in [0, ceil(H / cells)) x [0, ceil(W / cells)). f is the target's score (the model's raw output:
explain probabilities with a softmax model or ``output='logits'`` off).

Masks are drawn from ``seed`` ``batch_size`` at a time and shared by all images of the batch, so
memory grows with the batch size, never with ``masks``. ``raw``: (N, H, W). The heatmap is ``raw``
min-max scaled per image: RISE's map is an expected score (its level is the mean score, negative
for logits), so only its relative values carry information.
"""
from __future__ import annotations

import math

import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.core.imaging import minmax, resize_bilinear
from agnostic_cam.methods.base import register
from agnostic_cam.methods.perturb import LayerFreeMethod, baselines, check_baseline
from agnostic_cam.core.options import positive_int


def rise_masks(rng: np.random.Generator, count: int, cells: int, p: float, size: tuple[int, int]) -> np.ndarray:
    """``count`` RISE masks (count, H, W) float32 in [0, 1] (Petsiuk et al. 2018, Sec. 3.2)."""
    H, W = size
    ch, cw = math.ceil(H / cells), math.ceil(W / cells)
    grid = (rng.random((count, cells, cells)) < p).astype(np.float32)
    up = resize_bilinear(grid, ((cells + 1) * ch, (cells + 1) * cw))
    dy = rng.integers(0, ch, count)
    dx = rng.integers(0, cw, count)
    return np.stack([up[k, dy[k]:dy[k] + H, dx[k]:dx[k] + W] for k in range(count)])


@register("rise")
class RISE(LayerFreeMethod):
    """RISE: the score-weighted average of random masks (randomized input sampling).

    Paper: V. Petsiuk, A. Das and K. Saenko, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018, arXiv:1806.07421 (Sec. 3, eq. 6; masks as in Sec. 3.2).

    With f the target's score, I the image blended with the baseline where a mask is 0, and
    M_1..M_m random masks (m = ``masks``):

        raw     = 1 / (m p) * sum_i f(I . M_i) M_i                      (N, H, W)
        heatmap = minmax(raw)                                            per image

    Each mask: a binary ``cells`` x ``cells`` grid, each cell 1 with probability ``p``, bilinearly
    upsampled to (cells + 1) * ceil(H / cells) by (cells + 1) * ceil(W / cells) and cropped to
    H x W at a random shift. f is the model's raw output (explain probabilities with a softmax
    model or ``output='logits'`` off). Masks are drawn from ``seed`` ``batch_size`` at a time and
    shared by all images. Layer-free and forward-only (runs on ONNX Runtime).

    Args:
        masks (int): the number of masks m. Default 2000.
        cells (int): the grid size. Default 7.
        p (float): the probability that a grid cell is kept, in (0, 1]. Default 0.5.
        seed (int | None): the masks' seed; None draws fresh masks every call. Default 0.
        baseline (float | str | numpy.ndarray): a number, "zero", "mean", "blur", or an array (one
            image or the batch, model layout). Default 0.0.
        batch_size (int | None): masked images per forward pass; None uses the explainer's.
            Default None.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="rise", masks=50, cells=4)
        >>> exp.heatmap.shape, exp.raw.shape, exp.layer_used
        ((2, 32, 32), (2, 32, 32), False)
        >>> round(float(exp.heatmap.min()), 3), round(float(exp.heatmap.max()), 3)
        (0.0, 1.0)
    """

    def __init__(self, masks: int = 2000, cells: int = 7, p: float = 0.5, seed: int | None = 0,
                 baseline=0.0, batch_size: int | None = None):
        self.masks = positive_int("masks", masks, 1)
        self.cells = positive_int("cells", cells, 1)
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 < p <= 1:
            raise OptionError(f"p (the probability that a grid cell is kept) must be in (0, 1]; got {p!r}")
        self.p = float(p)
        self.seed = seed
        self.baseline = check_baseline(baseline)
        self.batch_size = None if batch_size is None else positive_int("batch_size", batch_size, 1)

    def compute(self, cap) -> np.ndarray:
        size = cap.input_size
        rng = np.random.default_rng(self.seed)
        base = baselines(cap, self.baseline)
        total = np.zeros((cap.n, *size))
        bs = self.rows(cap)
        with cap.progress_bar(self.masks * cap.n, "RISE") as bar:
            for lo in range(0, self.masks, bs):
                m = rise_masks(rng, min(bs, self.masks - lo), self.cells, self.p, size)
                flat = m.reshape(len(m), -1).astype(np.float64)
                for i in range(cap.n):
                    s = cap.row_scores(cap.forward(cap.blend(i, m, base[i])), i)
                    total[i] += (s @ flat).reshape(size)
                    bar.update(len(m))
        return (total / (self.masks * self.p)).astype(np.float32)

    def heatmap(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return minmax(np.nan_to_num(np.asarray(raw, dtype=np.float32)))
