"""Records of segmentation / detection audits (``--task segment|detect``; see
:mod:`agnostic_cam.audit.tasks`): the same record layout as classification, with ``task`` and
``target`` (what was explained, in the image's own pixels), ``score`` the task target's score
(``probability`` empty), and per method deletion/insertion AUC of that score, and the pointing game
and energy-based pointing game (share of the map inside) when masks or boxes were given."""
from __future__ import annotations

import time
import warnings

import numpy as np

from agnostic_cam.evaluation import metrics
from agnostic_cam.audit.detections import top_boxes
from agnostic_cam.audit.record import Result, _png, overlay_at, predict_batch
from agnostic_cam.audit.tasks import detect_format, read_mask, resize_mask
from agnostic_cam.core.degenerate import DegenerateMapWarning
from agnostic_cam.errors import InputError
from agnostic_cam.targets import DetectionBoxes, SegmentationMask


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _segment(ctx, batch, out: np.ndarray, hw: tuple[int, int]):
    """(target, descriptions, classes, regions at input size or None)."""
    task = ctx.cfg.task
    k = task["category"]
    masks, regions, desc = [], [], []
    for b in batch:
        if task["masks"]:
            m = read_mask(task, b.item.rel, b.size)
            if not m.any():
                raise InputError(f"the mask of {b.item.file!r} is empty (no nonzero pixel); nothing to explain")
            masks.append(resize_mask(m, out.shape[2:]))
            regions.append(resize_mask(m, hw))
            desc.append(f"class {k} over its mask ({int(m.sum())} px)")
        else:
            masks.append(np.ones(out.shape[2:], bool))
            desc.append(f"class {k} over the whole image")
    target = SegmentationMask(k, np.stack(masks).astype(np.float64))
    return target, desc, [k] * len(batch), regions if task["masks"] else None


def _detect(ctx, batch, out: np.ndarray, hw: tuple[int, int]):
    task = ctx.cfg.task
    fmt = task["format"] or detect_format(ctx.ex, task, out.shape)
    boxes, labels, regions, desc = [], [], [], []
    own = top_boxes(out, fmt, task["top_boxes"]) if task["top_boxes"] else None
    for j, b in enumerate(batch):
        sy, sx = hw[0] / b.size[0], hw[1] / b.size[1]  # image pixels -> model input pixels
        if own is None:
            entries = task["boxes"].get(b.item.rel, task["boxes"].get(b.item.file))
            bx = np.array([e["box"] for e in entries], np.float64) * [sx, sy, sx, sy]
            lab = np.array([e["label"] for e in entries], np.int64)
        else:
            bx, lab = own[j]
            if not len(bx):
                raise InputError(f"the model predicts no box on {b.item.file!r}; nothing to explain (--top-boxes)")
        boxes.append(bx)
        labels.append(lab)
        shown = bx / [sx, sy, sx, sy]
        desc.append("; ".join(f"box [{', '.join(_fmt(v) for v in r)}] label {int(c)}" for r, c in zip(shown, lab)))
        regions.append(np.stack([bx[:, 1], bx[:, 0], bx[:, 3], bx[:, 2]], 1))  # (y0, x0, y1, x1) for pointing
    target = DetectionBoxes(boxes, labels, iou=task["iou"], format=fmt)
    return target, desc, [int(lab[0]) for lab in labels], regions if own is None else None


def _hit(heat: np.ndarray, region) -> float:
    if region is None:
        return None
    if region.dtype == bool:
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        return float(region[y, x])
    return float(metrics.pointing_game(heat[None], [region])[0])


def _energy(heat: np.ndarray, region) -> float | None:
    """Energy-based pointing game of the map in the mask or boxes (share of the map's sum inside)."""
    if region is None:
        return None
    from agnostic_cam.evaluation.localisation import boxes_to_masks, energy_based_pointing_game

    mask = region if region.dtype == bool else boxes_to_masks([region], (1, *heat.shape))[0]
    v = float(energy_based_pointing_game(heat[None], mask[None])[0])
    return v if np.isfinite(v) else None


def compute(ctx, batch) -> list[Result]:
    """Records of ``batch`` (loaded images of one shape) for the task audit."""
    from agnostic_cam.inputs.image_files import to_uint8

    ex, cfg, n = ctx.ex, ctx.cfg, len(batch)
    x, out = predict_batch(ctx, batch)
    hw = batch[0].rgb.shape[:2]
    matches = None  # --task detect --ground-truth: per image its ground-truth boxes and matches (audit/box_truth.py)
    if cfg.task.get("ground_truth"):
        from agnostic_cam.audit import box_truth

        target, desc, classes, regions, matches = box_truth.truth_targets(ctx, batch, out, hw)
    else:
        build = _segment if cfg.task["task"] == "segment" else _detect
        target, desc, classes, regions = build(ctx, batch, out, hw)
    scores = np.asarray(target(out), np.float64).reshape(-1)
    shown = [b.display if b.display is not None else to_uint8(b.rgb) for b in batch]

    def drawn(rgb, j):  # the ground-truth boxes and their matched detections drawn on the pictures
        return rgb if matches is None else box_truth.draw_boxes(rgb, matches[j], hw)

    results = []
    for j, b in enumerate(batch):
        it = b.item
        rec = {"file": it.file, "rel": it.rel, "key": it.key, "sha": b.sha, "fingerprint": ctx.fingerprint,
               "task": cfg.task["task"], "target": desc[j], "class": classes[j], "label": ctx.label(classes[j]),
               "true_label": it.true_label, "score": float(scores[j]), "probability": None,
               "input": f"overlays/{it.stem}__input.png", "methods": {}}
        if matches is not None:
            rec["boxes"] = box_truth.box_records(matches[j], (hw[0] / b.size[0], hw[1] / b.size[1]))
        results.append(Result(rec, {rec["input"]: _png(drawn(shown[j], j))}))
    layout = ex.adapter.layout
    for method in cfg.methods:
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # degenerate maps are counted in the report instead
            warnings.simplefilter("ignore", DegenerateMapWarning)
            e = ex.explain(x, method, target=target)
        heat = e.heatmap
        kw = {"targets": target, "steps": cfg.steps, "layout": layout, "progress": False}
        dele = metrics.perturbation_curve(ex, x, heat, "deletion", **kw).auc
        ins = metrics.perturbation_curve(ex, x, heat, "insertion", **kw).auc
        if matches is not None:  # each matched box explained alone, scored inside its ground-truth box
            per_box = box_truth.score_boxes(ex, x, matches, method, target.format, cfg.task["iou"], hw, heat)[0]
            for res, vals in zip(results, per_box):
                for entry, v in zip(res.record["boxes"], vals):
                    entry["energy_pointing"][method] = v
        secs = (time.perf_counter() - t0) / n
        for j, res in enumerate(results):
            name = f"overlays/{batch[j].item.stem}__{method.replace('+', 'p')}.png"
            res.record["methods"][method] = {
                "deletion_auc": float(dele[j]), "insertion_auc": float(ins[j]), "drop_pct": None, "increase": None,
                "pointing_hit": None if regions is None else _hit(heat[j], regions[j]), "seconds": round(secs, 4),
                "energy_pointing": None if regions is None else _energy(heat[j], regions[j]),
                "overlay": name, "degenerate": "" if e.degenerate is None else str(e.degenerate_reason[j])}
            res.files[name] = _png(drawn(overlay_at(shown[j], heat[j]), j))
        step = getattr(ctx, "on_step", None)
        if step is not None:
            step([b.item.key for b in batch], method)
    return results
