"""Targets for segmentation, detection and embedding models (re-exported by :mod:`agnostic_cam.targets`).

Each maps the model output of a batch to one score per row with operations that NumPy arrays,
torch tensors and TensorFlow tensors share, so forward-only methods (NumPy, ONNX Runtime) and
gradient methods (the framework's autograd) score the same thing:

- :class:`SegmentationMask` ``(category, mask)``: output (N, K, H, W); sum of the category's scores
  over the mask, as pytorch-grad-cam's ``SemanticSegmentationTarget``.
- :class:`DetectionBoxes` ``(boxes, labels, iou=0.5, format=...)``: each requested box (x1, y1, x2, y2
  in input pixels) scored by its best-matching prediction, summed over the boxes (0 for a box without
  a match). ``format="torchvision"``: outputs of torchvision detectors, packed (N, D, 6) rows
  [x1, y1, x2, y2, score, label] (what the PyTorch adapter returns for them; a list of dicts with
  boxes/labels/scores works too); the match is the prediction of highest IoU, which counts when its
  IoU exceeds ``iou`` and its label equals the box's, scoring IoU + score (pytorch-grad-cam's
  ``FasterRCNNBoxScoreTarget``). ``format="yolo"``: raw YOLO-style heads (N, 4+K, A) or (N, A, 4+K)
  (the smaller of the two last axes is 4+K) with (cx, cy, w, h) boxes and K class scores, no NMS;
  among the anchors whose IoU exceeds ``iou`` the match maximises IoU + the box label's class score,
  which is its score.
- :class:`Similarity` ``(embedding)``: output (N, D); cosine similarity to the embedding (as
  pytorch-grad-cam's ``SimilarityToConceptTarget``), or ``metric="dot"``.

Boxes and masks may be one for every image or one per image (a list of N box arrays / an (N, H, W)
mask); perturbation methods score many rows of one image through :meth:`Target.select`.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from collections.abc import Callable

from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.targets import dispatch as D

FORMATS = ("torchvision", "yolo")


class Target:
    """Base of the task targets (segmentation, detection, similarity; see
    :mod:`agnostic_cam.targets.tasks`): ``target(output)`` maps the model output of a batch (M, ...)
    to (M,) scores, row i scored for image i. Written with operations NumPy arrays and torch / TF
    tensors share, so gradient methods differentiate it in the framework.

    A target that holds one specification per image (one mask or box list per image) returns, from
    :meth:`select`, the target for rows that belong to images ``image`` (M,) (perturbation methods
    score many rows of one image); a target that is the same for every image returns itself.
    """

    def __call__(self, output: Any) -> Any:
        raise NotImplementedError

    def select(self, image: np.ndarray) -> Target:
        return self


def for_rows(fn: Callable | None, image: np.ndarray) -> Callable | None:
    """The target callable for output rows that belong to images ``image`` (M,)."""
    return fn.select(np.asarray(image, dtype=np.int64)) if isinstance(fn, Target) else fn














def _relu(t: Any) -> Any:
    return (t + abs(t)) / 2


def _min(a: Any, b: Any) -> Any:
    return (a + b - abs(a - b)) / 2


def _max(a: Any, b: Any) -> Any:
    return (a + b + abs(a - b)) / 2


def box_iou(box: np.ndarray, boxes: Any) -> Any:
    """IoU (D,) of one (x1, y1, x2, y2) box with ``boxes`` (D, 4), in ``boxes``' library."""
    b = [float(v) for v in box]
    w = _relu(_min(boxes[:, 2], b[2]) - _max(boxes[:, 0], b[0]))
    h = _relu(_min(boxes[:, 3], b[3]) - _max(boxes[:, 1], b[1]))
    inter = w * h
    area = _relu(boxes[:, 2] - boxes[:, 0]) * _relu(boxes[:, 3] - boxes[:, 1])
    return inter / (area + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def xywh_to_xyxy(p: Any) -> Any:
    """(A, 4) centre boxes (cx, cy, w, h) -> corners (x1, y1, x2, y2), in ``p``'s library."""
    cx, cy, w, h = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    kind = D.kind(p)
    parts = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    if kind == "torch":
        return sys.modules["torch"].stack(parts, 1)
    if kind == "tf":
        return sys.modules["tensorflow"].stack(parts, 1)
    return np.stack(parts, 1)


def check_yolo_shape(shape: tuple) -> None:
    """A raw YOLO-style head (N, 4+K, A) / (N, A, 4+K) is read by its smaller axis being 4+K; a square
    one cannot be read (LayoutError)."""
    from agnostic_cam.errors import LayoutError

    if len(shape) == 3 and shape[1] == shape[2]:
        raise LayoutError(f"the YOLO-style output {shape} is square: its anchors cannot be told from its 4+K box and "
                          "class rows. Export the model at another input size (YOLOv8 at 64 px has 84 anchors and "
                          "4+80 rows; 96 or 640 px do not collide)")


class _PerImage(Target):
    """A target holding a specification per image: ``self._items[i]``; rows map to images ``self._rows``."""

    def __init__(self, items: list, rows: np.ndarray | None = None):
        self._items = items
        self._rows = rows

    def select(self, image: np.ndarray) -> _PerImage:
        image = np.asarray(image, dtype=np.int64)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._rows = image if self._rows is None else self._rows[image]
        return new

    def _item(self, row: int) -> Any:
        if len(self._items) == 1:
            return self._items[0]
        idx = row if self._rows is None else int(self._rows[row])
        if idx >= len(self._items):
            raise InputError(f"the target holds {len(self._items)} per-image specifications but row {idx} was asked for; "
                             "pass one per image of the batch (or one for all)")
        return self._items[idx]


class SegmentationMask(_PerImage):
    """Sum of ``category``'s scores (output (N, K, H, W)) over ``mask`` ((H, W) for every image, or (N, H, W))."""

    def __init__(self, category: int, mask: Any):
        if isinstance(category, bool) or not isinstance(category, (int, np.integer)):
            raise InputError(f"SegmentationMask's category must be an int class index; got {category!r}")
        m = np.asarray(D.to_numpy(mask), dtype=np.float64)
        if m.ndim not in (2, 3):
            raise InputError(f"the mask must be (H, W) or (N, H, W); got shape {m.shape}")
        self.category = int(category)
        super().__init__([m] if m.ndim == 2 else list(m))

    def __call__(self, output: Any) -> Any:
        if len(output.shape) != 4:
            raise InputError(f"SegmentationMask scores a segmentation output (N, K, H, W); the model returns shape "
                             f"{tuple(output.shape)} (select the map with output=, e.g. output='out')")
        if self.category >= output.shape[1]:
            raise InputError(f"category {self.category} is out of range: the output has {output.shape[1]} classes")
        masks = np.stack([self._item(r) for r in range(output.shape[0])])
        if masks.shape[1:] != tuple(output.shape[2:]):
            raise InputError(f"the mask is {masks.shape[1:]} but the output map is {tuple(output.shape[2:])}")
        return D.sum_axes(output[:, self.category] * D.as_like(masks, output), (1, 2))


class DetectionBoxes(_PerImage):
    """Score of requested ``boxes`` (B, 4) x1y1x2y2 with ``labels`` (B,) (or lists, one per image)."""

    def __init__(self, boxes: Any, labels: Any, iou: float = 0.5, format: str = "torchvision"):
        if format not in FORMATS:
            raise OptionError(f"format must be one of {FORMATS}; got {format!r}")
        if not isinstance(iou, (int, float)) or isinstance(iou, bool) or not 0 <= iou < 1:
            raise OptionError(f"iou must be a number in [0, 1); got {iou!r}")
        per_image = isinstance(boxes, (list, tuple)) and len(boxes) > 0 and np.asarray(boxes[0]).ndim == 2
        bs = list(boxes) if per_image else [boxes]
        ls = list(labels) if per_image else [labels]
        if len(bs) != len(ls):
            raise InputError(f"{len(bs)} box lists but {len(ls)} label lists; pass one of each per image")
        items = []
        for b, lab in zip(bs, ls):
            b = np.asarray(D.to_numpy(b), dtype=np.float64).reshape(-1, 4)
            lab = np.asarray(D.to_numpy(lab), dtype=np.int64).reshape(-1)
            if len(b) != len(lab):
                raise InputError(f"{len(b)} boxes but {len(lab)} labels; pass one label per box")
            items.append((b, lab))
        self.iou, self.format = float(iou), format
        super().__init__(items)

    def boxes_for(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (B, 4) x1y1x2y2, labels (B,)) requested for output row ``row``."""
        return self._item(row)

    def __call__(self, output: Any) -> Any:
        if isinstance(output, (list, tuple)):  # torchvision's own list of dicts
            return D.stack([self._score_torchvision(r, d["boxes"], d["scores"], d["labels"])
                           for r, d in enumerate(output)], output[0]["scores"])
        if len(output.shape) != 3:
            raise InputError(f"DetectionBoxes(format={self.format!r}) needs a rank-3 output; the model returns shape "
                             f"{tuple(output.shape)}")
        if self.format == "torchvision":
            return D.stack([self._score_torchvision(r, o[:, :4], o[:, 4], o[:, 5]) for r, o in enumerate(output)], output)
        check_yolo_shape(tuple(output.shape))
        if output.shape[1] < output.shape[2]:  # (N, 4+K, A) -> (N, A, 4+K)
            output = D.transpose(output)
        return D.stack([self._score_yolo(r, o) for r, o in enumerate(output)], output)

    def _score_torchvision(self, row: int, boxes: Any, scores: Any, labels: Any) -> Any:
        total = scores.sum() * 0.0  # a zero of the output's library, connected to it for autograd
        want, want_labels = self._item(row)
        lab = np.rint(D.to_numpy(labels)).astype(np.int64)
        if len(lab) == 0:
            return total
        for b, c in zip(want, want_labels):
            ious = box_iou(b, boxes)
            k = D.argmax(ious)
            if float(D.to_numpy(ious)[k]) > self.iou and lab[k] == c:
                total = total + ious[k] + scores[k]
        return total

    def _score_yolo(self, row: int, o: Any) -> Any:
        boxes = xywh_to_xyxy(o[:, :4])
        total = o.sum() * 0.0
        want, want_labels = self._item(row)
        k_classes = o.shape[1] - 4
        for b, c in zip(want, want_labels):
            if not 0 <= c < k_classes:
                raise InputError(f"box label {c} is out of range: the head has {k_classes} classes")
            ious = box_iou(b, boxes)
            score = ious + o[:, 4 + int(c)]
            ok = D.to_numpy(ious) > self.iou
            if ok.any():
                k = int(np.flatnonzero(ok)[np.argmax(D.to_numpy(score)[ok])])
                total = total + score[k]
        return total


class Similarity(Target):
    """Cosine similarity (or ``metric='dot'``: dot product) of output rows (N, D) to ``embedding`` (D,)."""

    def __init__(self, embedding: Any, metric: str = "cosine"):
        if metric not in ("cosine", "dot"):
            raise OptionError(f"metric must be 'cosine' or 'dot'; got {metric!r}")
        e = np.asarray(D.to_numpy(embedding), dtype=np.float64).reshape(-1)
        self.embedding, self.metric = e, metric

    def __call__(self, output: Any) -> Any:
        out = output.reshape((output.shape[0], -1)) if D.kind(output) != "tf" else \
            sys.modules["tensorflow"].reshape(output, (output.shape[0], -1))
        if out.shape[1] != len(self.embedding):
            raise InputError(f"the embedding has {len(self.embedding)} values but the model outputs {out.shape[1]} per image")
        e = D.as_like(self.embedding, out)
        dot = D.sum_axes(out * e, (1,))
        if self.metric == "dot":
            return dot
        return dot / ((D.sum_axes(out * out, (1,)) ** 0.5) * float(np.linalg.norm(self.embedding)) + 1e-8)




def _register_translators() -> None:
    """pytorch-grad-cam's segmentation / detection / similarity target objects, as ours."""
    from agnostic_cam.targets.translators import TRANSLATORS

    TRANSLATORS.setdefault("SemanticSegmentationTarget", lambda o: (("task", id(o)), SegmentationMask(o.category, o.mask)))
    TRANSLATORS.setdefault("FasterRCNNBoxScoreTarget", lambda o: (("task", id(o)), DetectionBoxes(
        o.bounding_boxes, o.labels, iou=o.iou_threshold, format="torchvision")))
    TRANSLATORS.setdefault("SimilarityToConceptTarget", lambda o: (("task", id(o)), Similarity(o.features)))
    for cls in (SegmentationMask, DetectionBoxes, Similarity):
        TRANSLATORS.setdefault(cls.__name__, lambda o: (("task", id(o)), o))


_register_translators()
