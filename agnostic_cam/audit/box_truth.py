"""Detectors against their ground-truth boxes: ``agnostic-cam audit MODEL IMAGES --task detect
--ground-truth LABELS`` (COCO JSON, YOLO or Pascal VOC labels; :mod:`agnostic_cam.audit.ground_truth`).

The rule, per image:

1. The model's detections are its :data:`MAX_DETECTIONS` best predictions
   (:func:`~agnostic_cam.audit.detections.top_detections`: a raw YOLO head by best class score with
   greedy NMS at IoU 0.5, torchvision-style rows by score).
2. Each ground-truth box is matched to the detection **of the same class with the highest IoU**;
   it is matched when that IoU is at least ``--iou`` (default 0.5). Otherwise it is reported as
   unmatched, with the reason (no detection of its class, best IoU below the threshold, or a class
   name that is no class index: VOC names are looked up in ``--labels``). Each box is matched on
   its own, so one detection may match two boxes. The class is the label's own number (YOLO's
   index, COCO's ``category_id`` as is: a 1-based COCO id against a 0-based model is a mismatch
   that shows as unmatched boxes).
3. Each matched detection is explained alone (target ``DetectionBoxes`` of that box and class) and
   scored by the **energy-based pointing game** of its map inside the ground-truth box: the share
   of the map's sum on pixels whose centre lies in the box, at the model's input size (higher is
   better; 1: all inside).

An image none of whose boxes is matched has nothing to explain: it fails with the list of its
unmatched boxes. Records carry ``boxes`` (one entry per ground-truth box); ``boxes.csv`` has a row
per box and method.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import InputError

MAX_DETECTIONS = 100  # torchvision's detections_per_img
BOX_COLUMNS = ("image", "box", "class", "x0", "y0", "x1", "y1", "matched", "detection", "detection_class",
               "detection_score", "iou", "method", "energy_pointing", "why")


def class_index(c, labels: list[str] | None) -> int | None:
    """The model's class index of a label's class: an int as is, a digit string as its number, a
    name by its place in ``labels``; None when it is none of those."""
    if isinstance(c, (int, np.integer)):
        return int(c)
    c = str(c)
    if c.isdigit():
        return int(c)
    return labels.index(c) if labels and c in labels else None


def match(gt: list[tuple], boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, iou: float,
          labels: list[str] | None = None) -> list[dict]:
    """One entry per ground-truth box ``(class, x0, y0, x1, y1)`` (input pixels) against detections
    ``boxes`` (D, 4), ``classes`` (D,), ``scores`` (D,): ``detection`` its index or None, ``iou``, ``why``."""
    from agnostic_cam.targets.tasks import box_iou

    res = []
    for c, *box in gt:
        k = class_index(c, labels)
        e = {"class": c, "class_index": k, "gt": [float(v) for v in box], "detection": None, "iou": None, "why": None}
        same = np.flatnonzero(classes == k) if k is not None else np.array([], int)
        if k is None:
            e["why"] = f"class {c!r} is no class index (pass --labels with the model's class names)"
        elif not len(same):
            e["why"] = f"no detection of class {k}"
        else:
            ious = np.asarray(box_iou(np.asarray(box, np.float64), boxes[same]))
            best = int(np.argmax(ious))
            e["iou"] = float(ious[best])
            if ious[best] >= iou:
                e["detection"] = int(same[best])
            else:
                e["why"] = f"best IoU with a class-{k} detection is {ious[best]:.3f} < {iou:g}"
        res.append(e)
    return res


def image_matches(ctx, b, out_row: np.ndarray, fmt: str, hw: tuple[int, int]) -> list[dict]:
    """The matched entries of image ``b`` (a loaded image) in model-input pixels, with their detections."""
    from agnostic_cam.audit.detections import top_detections

    gt, why = ctx.ground_truth.boxes(b.item.rel, b.size)  # the image file's pixels, then the model input's
    if gt is not None:
        sy, sx = hw[0] / b.size[0], hw[1] / b.size[1]
        gt = [(c, x0 * sx, y0 * sy, x1 * sx, y1 * sy) for c, x0, y0, x1, y1 in gt]
    if gt is None:
        raise InputError(f"{b.item.file!r}: {why}")
    if not gt:
        raise InputError(f"the label of {b.item.file!r} has no box; nothing to explain")
    boxes, classes, scores = top_detections(out_row[None], fmt, MAX_DETECTIONS)[0]
    entries = match(gt, boxes, classes, scores, ctx.cfg.task["iou"], ctx.cfg.labels)
    for e in entries:
        if e["detection"] is not None:
            d = e["detection"]
            e.update(det_box=boxes[d].tolist(), det_class=int(classes[d]), det_score=float(scores[d]))
    if all(e["detection"] is None for e in entries):
        raise InputError(f"none of the {len(entries)} ground-truth boxes of {b.item.file!r} is matched by a detection: "
                         + "; ".join(f"box {i} ({e['why']})" for i, e in enumerate(entries)))
    return entries


def box_records(entries: list[dict], scale: tuple[float, float]) -> list[dict]:
    """The record's ``boxes``: entries in the image's own pixels (``scale``: input pixels per image pixel, (sy, sx))."""
    sy, sx = scale
    back = np.array([sx, sy, sx, sy])
    out = []
    for e in entries:
        det = None if e["detection"] is None else (np.asarray(e["det_box"]) / back).round(3).tolist()
        out.append({"box": (np.asarray(e["gt"]) / back).round(3).tolist(), "class": e["class"],
                    "matched": e["detection"] is not None, "detection": det,
                    "detection_class": e.get("det_class"), "detection_score": e.get("det_score"), "iou": e["iou"],
                    "why": e["why"], "energy_pointing": {}})
    return out


def score_boxes(ex, x: np.ndarray, matches: list[list[dict]], method: str, fmt: str, iou: float,
                hw: tuple[int, int], image_heat: np.ndarray | None = None) -> tuple[list[list[float | None]], np.ndarray, list]:
    """Each matched box explained alone (one ``explain`` call for the batch) and scored by the
    energy-based pointing game inside its ground-truth box: per image a list (None: unmatched),
    the per-box maps (R, H, W) and the (image, box) of each map. ``image_heat`` (N, H, W): the maps
    of all matched boxes per image; an image with one matched box reuses its map (the same target)."""
    import warnings

    from agnostic_cam.audit.ground_truth import box_mask
    from agnostic_cam.core.degenerate import DegenerateMapWarning
    from agnostic_cam.evaluation.localisation import energy_based_pointing_game
    from agnostic_cam.targets import DetectionBoxes

    rows = [(j, i) for j, es in enumerate(matches) for i, e in enumerate(es) if e["detection"] is not None]
    count = np.bincount([j for j, _ in rows], minlength=len(matches))
    run = [r for r in rows if image_heat is None or count[r[0]] > 1]
    heat = np.zeros((len(rows), *hw), np.float32)
    if run:
        target = DetectionBoxes([np.array([matches[j][i]["det_box"]]) for j, i in run],
                                [np.array([matches[j][i]["det_class"]]) for j, i in run], iou=iou, format=fmt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateMapWarning)
            own = ex.explain(x[[j for j, _ in run]], method, target=target).heatmap
        heat[[rows.index(r) for r in run]] = own
    for k, (j, _) in enumerate(rows):
        if image_heat is not None and count[j] == 1:
            heat[k] = image_heat[j]
    masks = np.stack([box_mask(*matches[j][i]["gt"], *hw) for j, i in rows])
    ebpg = energy_based_pointing_game(heat.astype(np.float64), masks)
    scores: list[list[float | None]] = [[None] * len(es) for es in matches]
    for (j, i), v in zip(rows, ebpg):
        scores[j][i] = float(v) if np.isfinite(v) else None
    return scores, heat, rows


def csv_rows(r: dict):
    """boxes.csv's rows of record ``r`` (one per box and method; unmatched boxes one row without a method)."""
    from agnostic_cam.audit.files import csv_cell

    def num(v):
        return "" if v is None else f"{v:.6g}"

    for i, b in enumerate(r.get("boxes") or []):
        head = [csv_cell(r["file"]), i, csv_cell(str(b["class"])), *(num(v) for v in b["box"]), int(b["matched"]),
                "" if b["detection"] is None else " ".join(f"{v:.6g}" for v in b["detection"]),
                "" if b["detection_class"] is None else b["detection_class"], num(b["detection_score"]), num(b["iou"])]
        methods = b["energy_pointing"] or {"": None}
        for m, v in methods.items():
            yield [*head, csv_cell(m), num(v), csv_cell(b["why"] or "")]


GT_COLOUR, DETECTION_COLOUR = (255, 255, 255), (255, 200, 0)


def draw_boxes(rgb: np.ndarray, entries: list[dict], hw: tuple[int, int]) -> np.ndarray:
    """``rgb`` (h, w, 3) with each ground-truth box (white) and its matched detection (amber) drawn
    2 px wide; ``entries`` in model-input pixels ``hw``."""
    out = rgb.copy()
    h, w = out.shape[:2]
    sy, sx = h / hw[0], w / hw[1]
    for e in entries:
        for box, colour in ((e["gt"], GT_COLOUR), (e.get("det_box"), DETECTION_COLOUR)):
            if box is None:
                continue
            x0, x1 = (int(np.clip(round(v * sx), 0, w - 1)) for v in (box[0], box[2]))
            y0, y1 = (int(np.clip(round(v * sy), 0, h - 1)) for v in (box[1], box[3]))
            for a, b in ((y0, y0 + 2), (max(y1 - 1, 0), y1 + 1)):
                out[a:b, x0:x1 + 1] = colour
            for a, b in ((x0, x0 + 2), (max(x1 - 1, 0), x1 + 1)):
                out[y0:y1 + 1, a:b] = colour
    return out


def truth_targets(ctx, batch, out: np.ndarray, hw: tuple[int, int]):
    """(target, descriptions, classes, regions, matches) of a batch: the matched detections explained
    together per image (deletion/insertion), the ground-truth boxes as the pointing regions."""
    from agnostic_cam.audit.tasks import detect_format
    from agnostic_cam.targets import DetectionBoxes

    task = ctx.cfg.task
    fmt = task["format"] or detect_format(ctx.ex, task, out.shape)
    matches = [image_matches(ctx, b, out[j], fmt, hw) for j, b in enumerate(batch)]
    hit = [[e for e in es if e["detection"] is not None] for es in matches]
    target = DetectionBoxes([np.array([e["det_box"] for e in es]) for es in hit],
                            [np.array([e["det_class"] for e in es]) for es in hit], iou=task["iou"], format=fmt)
    desc = [f"{len(h)} of {len(es)} ground-truth boxes matched (IoU >= {task['iou']:g}, same class)"
            for h, es in zip(hit, matches)]
    regions = [np.array([[e["gt"][1], e["gt"][0], e["gt"][3], e["gt"][2]] for e in es]) for es in matches]
    return target, desc, [h[0]["det_class"] for h in hit], regions, matches
