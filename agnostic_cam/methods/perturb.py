"""Shared base of the layer-free (black-box) methods: occlusion, RISE, KernelSHAP, LIME.

They need no target layer and no gradient: each builds perturbed copies of an image
``x * m + b * (1 - m)`` for masks m (M, H, W) (1 keeps the pixel, 0 takes the baseline b), scores
them on ONNX Runtime ``batch_size`` rows at a time (memory grows with the batch, never with the
number of masks) and turns the scores into a per-pixel map. ``raw`` is that map (N, H, W), signed;
the heatmap keeps its positive part scaled per image by its maximum.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from agnostic_cam.core.capture import Capture, Needs
from agnostic_cam.core.baselines import baseline_for
from agnostic_cam.core.options import positive_int
from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import Method

BASELINES = ("zero", "mean", "blur")


def check_pair(name: str, value, lo: int = 1) -> tuple[int, int] | None:
    """An int or a pair of ints (h, w), each >= ``lo``; None stays None."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        h, w = pair
        return positive_int(name, h, lo), positive_int(name, w, lo)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be an int or a pair of ints (h, w) >= {lo}; got {value!r}") from None


def check_baseline(baseline) -> object:
    """A number, 'zero', 'mean', 'blur', or an array (one image or the batch, model layout)."""
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise OptionError(f"baseline must be a number, an array or one of {BASELINES}; got {baseline!r}")
        return baseline
    if isinstance(baseline, (int, float, np.integer, np.floating)) and not isinstance(baseline, bool):
        if not np.isfinite(baseline):
            raise OptionError(f"baseline must be finite; got {baseline!r}")
        return float(baseline)
    arr = np.asarray(baseline, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise OptionError("baseline contains NaN or Inf values")
    return arr


def baselines(cap: Capture, baseline) -> np.ndarray:
    """(N, *input) baseline images in the model's layout for ``baseline`` (see :func:`check_baseline`)."""
    if isinstance(baseline, np.ndarray):
        if baseline.shape == cap.x.shape[1:]:
            return np.broadcast_to(baseline, cap.x.shape)
        if baseline.shape == cap.x.shape:
            return baseline
        raise OptionError(f"baseline must be a number, {BASELINES}, one image of shape {cap.x.shape[1:]} or a batch "
                          f"of shape {cap.x.shape} in the model's layout ({cap.layout}); got shape {baseline.shape}")
    return baseline_for(cap.x, baseline, cap.layout)


class LayerFreeMethod(Method):
    """A method that perturbs the input and scores the output (forward only)."""

    needs = Needs.FORWARD
    batch_size: int | None = None

    def heatmap(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """relu(raw) / max per image (all-zero maps stay zero), (N, H, W) float32 in [0, 1]."""
        m = np.maximum(np.nan_to_num(np.asarray(raw, dtype=np.float32)), 0)
        top = m.max(axis=(-2, -1), keepdims=True)
        return np.divide(m, top, out=np.zeros_like(m), where=top > 0)

    def scores(self, cap: Capture, image: int, masks: Iterator[np.ndarray], total: int, base: np.ndarray,
               desc: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (masks (M, H, W), target scores (M,)) for each batch of ``masks`` applied to image
        ``image`` against baseline ``base`` (one image, model layout)."""
        with cap.progress_bar(total, f"{desc} (image {image + 1}/{cap.n})" if cap.n > 1 else desc) as bar:
            for m in masks:
                out = cap.forward(cap.blend(image, m, base))
                yield m, cap.row_scores(out, image)
                bar.update(len(m))

    def rows(self, cap: Capture) -> int:
        return self.batch_size or cap.batch_size


def batched(masks_of, total: int, bs: int) -> Iterator[np.ndarray]:
    """``masks_of(lo, hi)`` for consecutive ranges of at most ``bs`` of ``range(total)``."""
    for lo in range(0, total, bs):
        yield masks_of(lo, min(lo + bs, total))
