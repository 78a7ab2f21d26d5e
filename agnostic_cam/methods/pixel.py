"""Shared base of the pixel-space (input-gradient) methods.

A pixel method's ``raw`` map is a signed attribution per input value, always channel-first
(N, C, H, W) whatever the model's layout (the same convention as layer activations), so results
from NCHW and NHWC models compare directly; ``raw.transpose(0, 2, 3, 1)`` gives channels-last.
Volumes and clips: raw (N, C, D, H, W), heatmap (N, D, H, W) scaled per volume.
Its ``heatmap`` (N, H, W) is ``max_c |raw|`` scaled per image by its maximum (Simonyan et al.
2014, Sec. 3.1: the saliency of a pixel is the largest magnitude over its colour channels).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.methods.base import Capture, Method, Needs
from agnostic_cam.errors import OptionError

SIGNS = ("abs", "positive", "negative")


def to_chw(a: np.ndarray, layout: str) -> np.ndarray:
    """(M, *input) in ``layout`` -> (M, C, H, W) float32."""
    return L.to_chw(np.asarray(a, dtype=np.float32), layout)


from_chw = L.from_chw  # (M, C, H, W) -> (M, *input) in ``layout``


def scale_max(maps: np.ndarray, ndim: int = 2) -> np.ndarray:
    """Non-negative maps (N, H, W) divided by their per-map maximum (all-zero maps stay zero); ``ndim``
    3: volumes (N, D, H, W), one maximum per volume.

    Scale-free on purpose: input gradients are often ~1e-5, where an additive eps would distort them.
    """
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    top = maps.max(axis=tuple(range(-ndim, 0)), keepdims=True)
    return np.divide(maps, top, out=np.zeros_like(maps), where=top > 0)


def channel_saliency(raw: np.ndarray, sign: str = "abs") -> np.ndarray:
    """(N, C, H, W) signed map -> (N, H, W): max over channels of |raw|, relu(raw) or relu(-raw)."""
    if sign not in SIGNS:
        raise OptionError(f"sign must be one of {SIGNS}; got {sign!r}")
    m = np.abs(raw) if sign == "abs" else np.maximum(raw if sign == "positive" else -raw, 0)
    return m.max(axis=1)


def accumulate(total: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``total[index[i]] += values[i]`` for every row i (in place), one reduction per distinct index
    (rows of one image are contiguous in a batch, so this is a handful of sums, not ``np.add.at``)."""
    for k in np.unique(index):
        total[k] += values[index == k].sum(axis=0)



class PixelMethod(Method):
    """A method over d(score)/d(input). ``rule`` is the ReLU backward rule it needs
    ('vanilla', 'guided', 'deconv'); the explainer computes the gradient at the images under it
    (``cap.input_grads``) and gives ``cap.input_grad`` for more passes.

    Subclasses override :meth:`from_grads` (attribution from inputs and their gradients) or
    :meth:`attribute` (several gradient passes per input, e.g. integrated gradients).
    """

    needs = Needs.INPUT_GRADIENTS
    rule: ClassVar[str] = "vanilla"
    smoothable: ClassVar[bool] = True   # may serve as smoothgrad's base
    batch_size: int | None = None

    def from_grads(self, inputs: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Attribution (M, C, H, W) from input rows and their gradients (both (M, C, H, W))."""
        return grads

    def attribute(self, cap: Capture, inputs: np.ndarray, image: np.ndarray,
                  grads: np.ndarray | None = None) -> np.ndarray:
        """Attributions (M, C, H, W) of input rows ``inputs`` (M, *input) in the model's layout;
        row i is scored for the target of image ``image[i]``. ``grads``: their gradients under
        ``self.rule`` when already known (model layout)."""
        if grads is None:
            grads = cap.input_grad(inputs, image, self.rule)
        return self.from_grads(to_chw(inputs, cap.layout), to_chw(grads, cap.layout))

    def compute(self, cap: Capture) -> np.ndarray:
        return self.attribute(cap, cap.x, np.arange(cap.n), cap.input_grads)

    def heatmap(self, raw: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        return scale_max(channel_saliency(raw, "abs"), ndim=len(size))

    def gradients_in_batches(self, cap: Capture, rows, total: int, image_of, desc: str):
        """Yield (index array, gradients) for ``total`` rows built by ``rows(idx)`` (model layout),
        ``batch_size`` rows per backward pass (default ``cap.batch_size``), with a progress bar."""
        bs = self.batch_size or cap.batch_size
        with cap.progress_bar(total, desc) as bar:
            for lo in range(0, total, bs):
                idx = np.arange(lo, min(lo + bs, total))
                yield idx, cap.input_grad(rows(idx), image_of(idx), self.rule)
                bar.update(len(idx))
