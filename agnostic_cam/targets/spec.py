"""What to explain: turn the user's ``target`` argument into one score per image.

``target`` may be
- ``None``: the top-1 prediction of each image,
- an ``int``: the same class index for every image,
- a sequence of ints: one class index per image (its length must equal N),
- a callable ``f(output) -> scores``: maps the model output ``(M, K)`` to ``(M,)`` scores.
  Forward-only methods call it with NumPy arrays; gradient methods with the framework's
  tensors. Indexing and arithmetic (``out[:, 3] - out[:, 5]``) work on both.
- a task target for segmentation, detection or embedding models (:class:`SegmentationMask`,
  :class:`DetectionBoxes`, :class:`Similarity`; see :mod:`agnostic_cam.targets.tasks`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from agnostic_cam.errors import InputError

from agnostic_cam.targets.tasks import DetectionBoxes, SegmentationMask, Similarity, Target, for_rows  # noqa: F401 - re-exported

TargetLike = int | Sequence[int] | np.ndarray | Callable[[Any], Any] | None


class TargetSpec:
    """A validated ``target`` for a batch of ``n`` images."""

    def __init__(self, target: TargetLike, n: int):
        self.n = n
        self.fn: Callable[[Any], Any] | None = None
        self.fixed: np.ndarray | None = None
        if target is None:
            pass
        elif callable(target):
            self.fn = target
        elif isinstance(target, (bool, np.bool_)):
            raise InputError("target must be an int class index, a sequence of ints, None or a callable; got a bool")
        elif isinstance(target, (int, np.integer)):
            if not -2**62 < int(target) < 2**62:
                raise InputError(f"target class index {int(target)} is out of range; pass a class index of the model")
            self.fixed = np.full(n, int(target), dtype=np.int64)
        elif isinstance(target, (Sequence, np.ndarray)) and not isinstance(target, (str, bytes)):
            arr = np.asarray(target)
            if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
                raise InputError(
                    f"target must be an int, a 1-D sequence of ints (one per image), None or a callable; "
                    f"got an array of shape {arr.shape} and dtype {arr.dtype}")
            if arr.size != n:
                raise InputError(
                    f"target has {arr.size} class indices but the batch has {n} images; "
                    f"pass one index per image, or a single int for all of them")
            self.fixed = arr.astype(np.int64)
        else:
            raise InputError(
                f"target must be an int, a sequence of ints (one per image), None (top-1) or a callable "
                f"on the model output; got {type(target).__name__}")

    def subset(self, image: np.ndarray, classes: np.ndarray | None) -> TargetSpec:
        """The spec for rows that belong to images ``image`` (M,) (``classes``: the resolved class per image)."""
        image = np.asarray(image, dtype=np.int64)
        if self.fn is not None:
            return TargetSpec(for_rows(self.fn, image), len(image))
        return TargetSpec(classes[image], len(image))

    @property
    def is_callable(self) -> bool:
        return self.fn is not None

    def indices(self, outputs: np.ndarray) -> np.ndarray | None:
        """Class index per image (N,), resolved against the model's ``outputs`` (N, K).

        ``None`` for a callable target. Raises ``ValueError`` for an index out of range.
        """
        if self.fn is not None:
            return None
        outputs = np.asarray(outputs)
        if outputs.ndim != 2:
            raise InputError(
                f"class-index targets need a model output of shape (N, num_classes); the model returns "
                f"shape {outputs.shape}. Pass a callable target that maps the output to one score per image"
                + (" (a segmentation map (N, K, H, W): target=agnostic_cam.targets.tasks.SegmentationMask(category, "
                   "mask))" if outputs.ndim == 4 else ""))
        k = outputs.shape[1]
        if self.fixed is None:
            return outputs.argmax(axis=1).astype(np.int64)
        bad = (self.fixed < 0) | (self.fixed >= k)
        if bad.any():
            raise InputError(
                f"target class index {int(self.fixed[bad][0])} is out of range: the model has {k} outputs "
                f"(valid indices 0..{k - 1})")
        return self.fixed


def select_scores(outputs: np.ndarray, classes: np.ndarray | None, fn: Callable | None) -> np.ndarray:
    """Scores of ``classes`` (M,) in ``outputs`` (M, K), or ``fn(outputs)`` for a callable target."""
    if fn is not None:
        s = np.asarray(fn(outputs), dtype=np.float64).reshape(-1)
        if s.shape[0] != outputs.shape[0]:
            raise InputError(
                f"the target callable must return one score per image: got {s.shape[0]} scores "
                f"for {outputs.shape[0]} images")
        return s
    return np.asarray(outputs, dtype=np.float64)[np.arange(outputs.shape[0]), classes]
