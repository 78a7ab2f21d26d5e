"""One row per (image, present class): multi-label targets expanded once, before any method runs.

:func:`explain_rows` reads the present classes of each image from one forward pass
(:class:`~agnostic_cam.targets.multilabel.MultiLabel`), repeats each image once per present class
and explains the repeated batch with one class index per row, so every method (gradient or
forward-only, every framework) gives row (i, c) exactly the map ``target=c`` gives image i alone.
The result's ``image_index`` names each row's image, ``targets`` its class, and
``meta["multilabel"]`` records how the classes were chosen and which images have none.
Framework-free: imports no framework, adapter or engine.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.core.explanation import Explanation
from agnostic_cam.targets.multilabel import MultiLabel, Present


def row_index(present: Present) -> tuple[np.ndarray, np.ndarray]:
    """(image (M,), class (M,)): one row per present class, images in order, classes as listed."""
    image = [np.full(len(c), i, dtype=np.int64) for i, c in enumerate(present.classes)]
    cat = (lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64))
    return cat(image), cat(list(present.classes))


def record(present: Present, image: np.ndarray, classes: np.ndarray) -> dict:
    """What ``meta["multilabel"]`` holds: how the output was read ('logits', 'probabilities' or
    'given'), the threshold, each image's present classes, the images without one and, for a
    threshold, each row's probability."""
    rec: dict[str, Any] = {"scores": present.scores, "threshold": present.threshold,
                           "present": [c.tolist() for c in present.classes], "no_class": present.no_class}
    if present.probabilities is not None:
        rec["probabilities"] = present.probabilities[image, classes].astype(np.float32)
    return rec


def explain_rows(target: MultiLabel, x: np.ndarray, explain: Callable[[np.ndarray, np.ndarray], Explanation],
                 predict: Callable[[np.ndarray], np.ndarray], head: Callable[[], str | None], *, layout: str,
                 method: str, layer: str | None) -> Explanation:
    """Explain ``x`` (N, ...) for every present class of ``target``: ``explain(rows, classes)`` runs
    the pipeline on the repeated batch. ``head`` tells the op producing the output (for
    ``scores='auto'``). With no present class anywhere, no method runs: the result has zero rows
    (heatmap (0, *spatial)) and the record says why."""
    outputs = np.asarray(predict(x))
    present = target.present(outputs, head)
    image, classes = row_index(present)
    if len(image):
        exp = explain(x[image], classes)
        exp.image_index = image
    else:
        empty = np.zeros((0, *L.spatial_size(x.shape, layout)), np.float32)
        exp = Explanation(heatmap=empty, raw=empty, targets=classes, scores=np.zeros(0, np.float32), method=method,
                          layer=str(layer), outputs=outputs[:0], degenerate=np.zeros(0, bool),
                          degenerate_reason=np.zeros(0, object), image_index=image)
    exp.meta = dict(exp.meta, multilabel=record(present, image, classes))
    return exp
