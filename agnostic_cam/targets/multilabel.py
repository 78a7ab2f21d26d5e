"""Multi-label targets: one map per (image, present class) of a model with a sigmoid head.

:class:`MultiLabel` names the classes present in each image, by a threshold on the model's
probabilities or by explicit class lists. The explainer expands it once, before any method runs
(:mod:`agnostic_cam.core.rows`): image i with present classes [c1, c2] becomes two rows, each
explained exactly as ``target=c1`` / ``target=c2`` would explain image i alone (the row's score is
the model's output for that class, logit or probability as the model returns it). The result is
one :class:`~agnostic_cam.core.explanation.Explanation` whose ``image_index`` and ``targets`` say
which image and class each row belongs to; an image without a present class has no row, and
``exp.meta["multilabel"]["no_class"]`` lists it.

Which output values are probabilities (``scores=``):

- ``"logits"``: the probability of class k is ``sigmoid(output[k])``;
- ``"probabilities"``: the output is already a probability (values outside [0, 1] are refused);
- ``"auto"`` (default) decides only when that is unambiguous: the explained output comes out of a
  ``Sigmoid`` in the model's graph -> probabilities; some output value lies outside [0, 1] ->
  logits; otherwise (values all in [0, 1] without a final Sigmoid) an :class:`InputError` asks for
  ``scores=``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agnostic_cam.errors import InputError, OptionError

SCORES = ("auto", "logits", "probabilities")


@dataclass
class Present:
    """The classes present in each image of a batch: ``classes[i]`` (ascending for a threshold, as
    given for explicit lists); ``probabilities`` (N, K) when a threshold decided; ``scores``: how the
    output was read ('logits', 'probabilities' or 'given' for explicit lists)."""

    classes: list[np.ndarray]
    scores: str
    threshold: float | None = None
    probabilities: np.ndarray | None = field(default=None, repr=False)

    @property
    def no_class(self) -> list[int]:
        """Images with no present class (they get no row)."""
        return [i for i, c in enumerate(self.classes) if len(c) == 0]


class MultiLabel:
    """One map per (image, present class), for multi-label (sigmoid-head) models.

    threshold: a class is present when its probability is >= ``threshold`` (in (0, 1)); or, in its
    place, a list of class lists, one per image (``MultiLabel([[1, 3], [0]])``; an empty list: no
    class, no row). scores: how to read the output as probabilities, ``'auto'``, ``'logits'`` or
    ``'probabilities'`` (see :mod:`agnostic_cam.targets.multilabel`).

    Examples:
        >>> import numpy as np
        >>> logits = np.array([[2.0, -1.0, 0.5], [-3.0, -2.0, -4.0]])
        >>> p = MultiLabel(0.5).present(logits)
        >>> [c.tolist() for c in p.classes], p.scores, p.no_class
        ([[0, 2], []], 'logits', [1])
        >>> [c.tolist() for c in MultiLabel([[1], [0, 2]]).present(logits).classes]
        [[1], [0, 2]]
    """

    def __init__(self, threshold: float | Sequence[Sequence[int]] = 0.5, *, scores: str = "auto"):
        if scores not in SCORES:
            raise OptionError(f"scores must be one of {SCORES}; got {scores!r}")
        self.scores = scores
        self.threshold: float | None = None
        self.classes: list[np.ndarray] | None = None
        if isinstance(threshold, (bool, np.bool_)):
            raise OptionError("MultiLabel takes a threshold in (0, 1) or a list of class lists (one per image); got a bool")
        if isinstance(threshold, (int, float, np.integer, np.floating)):
            t = float(threshold)
            if not 0 < t < 1:
                raise OptionError(f"MultiLabel threshold must be a probability in (0, 1); got {threshold!r}")
            self.threshold = t
        elif isinstance(threshold, (Sequence, np.ndarray)) and not isinstance(threshold, (str, bytes)):
            self.classes = [self._class_list(c, i) for i, c in enumerate(threshold)]
        else:
            raise OptionError(f"MultiLabel takes a threshold in (0, 1) or a list of class lists (one per image); "
                              f"got {type(threshold).__name__}")

    @staticmethod
    def _class_list(c: Any, i: int) -> np.ndarray:
        if isinstance(c, (int, np.integer)) or not isinstance(c, (Sequence, np.ndarray)) or isinstance(c, (str, bytes)):
            raise InputError(f"MultiLabel class lists hold one list of class indices per image; image {i} has {c!r} "
                             f"(write [[1, 3], [0]], not [1, 3, 0])")
        arr = np.asarray(c)
        if arr.size and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise InputError(f"image {i}'s class list must hold int class indices; got {c!r}")
        return np.asarray(list(dict.fromkeys(arr.astype(np.int64).tolist())), dtype=np.int64)  # duplicates once

    def __repr__(self) -> str:
        what = self.threshold if self.classes is None else [c.tolist() for c in self.classes]
        return f"MultiLabel({what!r}, scores={self.scores!r})"

    def present(self, outputs: Any, head: str | Callable[[], str | None] | None = None) -> Present:
        """The present classes of each image, from the model's ``outputs`` (N, K).

        head: the op that produces the explained output in the model's graph ('Sigmoid', ...; None
        when unknown), or a function that tells it; read only by ``scores='auto'`` with a threshold."""
        out = np.asarray(outputs, dtype=np.float64)
        if out.ndim != 2:
            raise InputError(f"MultiLabel needs a model output of shape (N, num_classes); the model returns {out.shape}")
        n, k = out.shape
        if self.classes is not None:
            if len(self.classes) != n:
                raise InputError(f"MultiLabel has {len(self.classes)} class lists but the batch has {n} images; "
                                 "pass one list per image (an empty list for an image without a class)")
            for i, c in enumerate(self.classes):
                bad = c[(c < 0) | (c >= k)]
                if bad.size:
                    raise InputError(f"image {i}'s class index {int(bad[0])} is out of range: the model has {k} "
                                     f"outputs (valid indices 0..{k - 1})")
            return Present(list(self.classes), "given")
        if not np.isfinite(out).all():
            raise InputError("the model output holds NaN/Inf, so no class can be called present; check the images "
                             "and the model (or pass MultiLabel([[...], ...]) with the classes)")
        scores = self._read_as(out, head)
        prob = 1 / (1 + np.exp(-out)) if scores == "logits" else out
        return Present([np.flatnonzero(p >= self.threshold).astype(np.int64) for p in prob], scores, self.threshold,
                       prob)

    def _read_as(self, out: np.ndarray, head: str | Callable[[], str | None] | None) -> str:
        inside = bool(((out >= 0) & (out <= 1)).all())
        if self.scores == "probabilities" and not inside:
            raise InputError(f"MultiLabel(scores='probabilities'): the output holds values outside [0, 1] "
                             f"(min {out.min():.4g}, max {out.max():.4g}), so it is not probabilities; pass "
                             "scores='logits' to apply a sigmoid")
        if self.scores != "auto":
            return self.scores
        head = head() if callable(head) else head
        if head == "Sigmoid":
            return "probabilities"
        if not inside:
            return "logits"
        raise InputError("MultiLabel cannot tell whether the output is logits or probabilities: every value lies in "
                         f"[0, 1] but the output does not come out of a Sigmoid (it comes from {head or 'an unknown op'}); "
                         "pass MultiLabel(threshold, scores='logits') or scores='probabilities'")
