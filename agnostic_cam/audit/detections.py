"""Detector outputs for the audit: torchvision-style graphs packed into one tensor, and a model's
own top predictions as boxes to explain.

- :func:`torchvision_outputs` finds the ``boxes`` (D, 4), ``labels`` (D,) and ``scores`` (D,) graph
  outputs of an exported torchvision-style detector (by name, else by shape and dtype);
  :func:`packed` adds one graph output ``detections`` (N, DMAX, 6) of rows
  [x1, y1, x2, y2, score, label], zero-padded to DMAX rows (what
  :class:`~agnostic_cam.targets.tasks.DetectionBoxes` reads with ``format="torchvision"``; a zero box
  never matches a requested box, its IoU is 0), so every run of the graph has the same shape.
- :func:`top_boxes` decodes a batch of outputs into each image's ``n`` best predictions: a
  raw YOLO-style head (N, 4+K, A) / (N, A, 4+K) by its best class score per anchor, with greedy
  non-maximum suppression (IoU 0.5) so the boxes differ; packed torchvision rows by score.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import ModelError

PACKED = "detections"
DMAX = 100  # rows of the packed output (torchvision's default detections_per_img)
NMS_IOU = 0.5


def _outputs(model) -> list[tuple[str, int, int]]:
    """(name, elem_type, rank) of each graph output."""
    return [(o.name, o.type.tensor_type.elem_type, len(o.type.tensor_type.shape.dim)) for o in model.graph.output]


def torchvision_outputs(model) -> tuple[str, str, str] | None:
    """Names of the (boxes, labels, scores) outputs, or None when the graph has no such three."""
    import onnx

    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    outs = _outputs(model)
    by_name = {n.lower(): n for n, _, _ in outs}
    if all(k in by_name for k in ("boxes", "labels", "scores")):
        return by_name["boxes"], by_name["labels"], by_name["scores"]
    boxes = [n for n, t, r in outs if t in floats and r in (2, 3) and _last_dim(model, n) == 4]
    labels = [n for n, t, r in outs if t not in floats and r in (1, 2)]
    scores = [n for n, t, r in outs if t in floats and r in (1, 2) and n not in boxes]
    if len(boxes) == 1 and len(labels) == 1 and len(scores) == 1:
        return boxes[0], labels[0], scores[0]
    return None


def _last_dim(model, name: str) -> int | None:
    o = next(o for o in model.graph.output if o.name == name)
    d = o.type.tensor_type.shape.dim
    return d[-1].dim_value if d and d[-1].HasField("dim_value") else None


def packed(model, names: tuple[str, str, str]):
    """A copy of ``model`` with the output ``detections`` (N, DMAX, 6) = [boxes, score, label] rows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13)
    boxes, labels, scores = names
    rank = dict((n, r) for n, _, r in _outputs(m))[boxes]
    g, nodes = m.graph, []
    p = "_agnostic_cam_det_"

    def const(name: str, values) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), p + name))
        return p + name

    def unsqueeze(src: str, axis: int, out: str) -> str:
        if opset >= 13:
            nodes.append(helper.make_node("Unsqueeze", [src, const(out + "_axes", [axis])], [p + out]))
        else:
            nodes.append(helper.make_node("Unsqueeze", [src], [p + out], axes=[axis]))
        return p + out

    nodes.append(helper.make_node("Cast", [boxes], [p + "b"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Cast", [scores], [p + "s"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Cast", [labels], [p + "l"], to=TensorProto.FLOAT))
    parts = [p + "b", unsqueeze(p + "s", -1, "s1"), unsqueeze(p + "l", -1, "l1")]
    nodes.append(helper.make_node("Concat", parts, [p + "rows"], axis=-1))
    rows = p + "rows" if rank == 3 else unsqueeze(p + "rows", 0, "rows3")  # (N, D, 6)
    pads = const("pads", [0, 0, 0, 0, DMAX, 0])
    if opset >= 11:
        nodes.append(helper.make_node("Pad", [rows, pads], [p + "padded"], mode="constant"))
        nodes.append(helper.make_node("Slice", [p + "padded", const("start", [0]), const("end", [DMAX]),
                                                const("axis", [1])], [PACKED]))
    else:
        raise ModelError(f"the detector's graph uses ONNX opset {opset}; packing its boxes/labels/scores outputs "
                         "needs opset >= 11 (re-export the model with a newer opset)")
    g.node.extend(nodes)
    g.output.append(helper.make_tensor_value_info(PACKED, TensorProto.FLOAT, [None, DMAX, 6]))
    return m


def _nms(boxes: np.ndarray, order: np.ndarray, n: int) -> list[int]:
    """Greedy non-maximum suppression: the first ``n`` indices of ``order`` overlapping no kept box > NMS_IOU."""
    from agnostic_cam.targets.tasks import box_iou

    kept: list[int] = []
    for i in order:
        b = boxes[i]
        if (b[2] - b[0]) <= 0 or (b[3] - b[1]) <= 0:
            continue
        if not kept or float(np.max(box_iou(b, boxes[kept]))) <= NMS_IOU:
            kept.append(int(i))
            if len(kept) == n:
                break
    return kept


def top_boxes(out: np.ndarray, fmt: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: (boxes (B, 4) x1y1x2y2 in input pixels, labels (B,)) of its ``n`` best predictions (B <= n)."""
    return [(b, lab) for b, lab, _ in top_detections(out, fmt, n)]


def top_detections(out: np.ndarray, fmt: str, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (boxes (B, 4), labels (B,), scores (B,)) of its ``n`` best predictions, best first."""
    from agnostic_cam.targets.tasks import check_yolo_shape

    out = np.asarray(out, np.float64)
    if fmt != "torchvision":
        check_yolo_shape(out.shape)
    res = []
    for o in out:
        if fmt == "torchvision":
            boxes, score, label = o[:, :4], o[:, 4], np.rint(o[:, 5]).astype(np.int64)
            order = np.argsort(-score, kind="stable")
            order = order[(score[order] > 0) & (label[order] >= 0)]
            keep = [int(i) for i in order if o[i, 2] > o[i, 0] and o[i, 3] > o[i, 1]][:n]
        else:
            a = o.T if o.shape[0] < o.shape[1] else o  # (A, 4+K)
            cx, cy, w, h = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
            label = a[:, 4:].argmax(1)
            score = a[:, 4:].max(1)
            keep = _nms(boxes, np.argsort(-score, kind="stable"), n)
        res.append((boxes[keep].reshape(-1, 4), label[keep].reshape(-1), score[keep].reshape(-1)))
    return res


def detector_spec(spec):
    """``spec`` (a :class:`~agnostic_cam.audit.context.ModelSpec`) for a detection audit: a graph with
    torchvision-style boxes/labels/scores outputs gets them packed (``pack``) and explained as
    ``detections``, unless ``output`` names a raw head; a YOLO-style graph stays as it is."""
    import dataclasses

    import onnx

    if spec.output not in (None, "raw"):
        model = onnx.load(spec.model, load_external_data=False)
        if spec.output not in {o.name for o in model.graph.output} or spec.output == PACKED:
            return spec
        names = torchvision_outputs(model)
        if names is None or spec.output not in names:
            return spec  # the named output is explained as it is (a YOLO-style head)
    else:
        names = torchvision_outputs(onnx.load(spec.model, load_external_data=False))
        if names is None:
            return spec
    return dataclasses.replace(spec, output=PACKED, pack=names)
