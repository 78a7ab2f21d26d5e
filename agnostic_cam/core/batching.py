"""Gradient passes in batches: an adapter's backward pass runs ``batch_size`` images at a time, so
a gradient method's memory is bounded like a forward method's."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agnostic_cam.targets import TargetSpec, for_rows

# Bytes of input per gradient pass when no batch size is given (a backward pass keeps every
# intermediate tensor, so this is a quarter of what the ONNX Runtime forward batches aim for).
GRADIENT_BATCH_BYTES = 4 * 2**20
MAX_GRADIENT_BATCH = 32


def gradient_batch(x: np.ndarray, batch_size: int | None) -> int:
    """Images per gradient pass: ``batch_size`` if given, else from the input size (1..32)."""
    if batch_size:
        return int(batch_size)
    per = max(1, int(np.prod(x.shape[1:])) * 4)
    return int(max(1, min(MAX_GRADIENT_BATCH, GRADIENT_BATCH_BYTES // per)))


def sub_spec(spec: TargetSpec, lo: int, hi: int) -> TargetSpec:
    """The target of images lo..hi-1 of a batch."""
    if spec.fn is not None:  # per-image targets (masks, boxes...) follow their rows
        return TargetSpec(for_rows(spec.fn, np.arange(lo, hi)), hi - lo)
    return TargetSpec(None if spec.fixed is None else spec.fixed[lo:hi], hi - lo)


def batched_gradients(run: Callable, x: np.ndarray, spec: TargetSpec, batch_size: int):
    """``run(x_chunk, spec_chunk)`` -> Gradients over chunks of ``batch_size`` images, concatenated."""
    n = x.shape[0]
    if n <= batch_size:
        return run(x, spec)
    parts = [run(x[lo:lo + batch_size], sub_spec(spec, lo, min(lo + batch_size, n))) for lo in range(0, n, batch_size)]
    first = parts[0]
    for field in ("outputs", "scores", "classes", "activations", "grads", "input_grads"):
        vals = [getattr(p, field) for p in parts]
        setattr(first, field, None if vals[0] is None else np.concatenate(vals))
    return first
