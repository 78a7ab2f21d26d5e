"""The audit's tasks beyond classification: ``--task segment`` and ``--task detect``.

- ``segment``: a segmenter's output (N, K, H, W); ``--class K`` (``category=``) and optional masks
  (``masks=``: a folder of PNG masks matched by image name: ``<masks>/<image path without
  suffix>.png``; nonzero pixels are the region). Each image's target is
  :class:`~agnostic_cam.targets.tasks.SegmentationMask` (the class's scores summed over its mask,
  resized to the output map by nearest neighbour; the whole map when no folder is given).
- ``detect``: a YOLO-style raw head (N, 4+K, A) / (N, A, 4+K), or a torchvision-style graph with
  boxes / labels / scores outputs (packed, see :mod:`~agnostic_cam.audit.detections`); ``--output``
  picks the head when the graph has several. Boxes to explain come from ``boxes=`` (JSON
  ``{image name: [{"box": [x1, y1, x2, y2], "label": k}, ...]}``) or ``top_boxes=N`` (the model's own N
  best predictions); the target is :class:`~agnostic_cam.targets.tasks.DetectionBoxes`.

Masks and boxes are given in the image file's own pixels and scaled to the model's input. The
metrics are deletion/insertion of the task target's score, and the pointing game (the map's
maximum inside the mask / a box) when masks or boxes are given; average drop and increase in
confidence are for class probabilities only and stay empty.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from agnostic_cam.errors import AgnosticCamError, BackendError, InputError, ModelError, OptionError

TASKS = ("classify", "segment", "detect", "multilabel")


def make_task(task: str | None, category=None, masks=None, boxes=None, top_boxes=None, iou: float = 0.5,
              target=None, ground_truth=None, threshold: float = 0.5, present: dict | None = None) -> dict | None:
    """The validated task settings (a JSON-able dict), or None for classification. ``ground_truth``
    with ``detect``: the boxes to explain are the detections matched to the labels' boxes
    (:mod:`agnostic_cam.audit.box_truth`), so neither ``boxes`` nor ``top_boxes`` is given.
    ``multilabel``: ``threshold`` and ``present``, :mod:`agnostic_cam.audit.multilabel`."""
    task = task or "classify"
    if task not in TASKS:
        raise OptionError(f"task must be one of {TASKS}; got {task!r}")
    if present is not None and task != "multilabel":
        raise OptionError("--present (present=) names the classes of a multi-label audit; pass --task multilabel")
    if task == "multilabel":
        from agnostic_cam.audit import multilabel

        if any(v is not None for v in (category, masks, top_boxes, target)) or boxes:
            raise OptionError("--task multilabel explains every present class (from --threshold or --present); drop "
                              "--target, --class, --masks, --boxes and --top-boxes")
        return multilabel.make_task(threshold, present)
    if task == "classify":
        for name, v, flag in (("category", category, "--class"), ("masks", masks, "--masks"),
                              ("top_boxes", top_boxes, "--top-boxes")):
            if v is not None:
                raise OptionError(f"{flag} ({name}=) belongs to --task segment/detect; this audit is a classifier's "
                                  "(pass --task segment or --task detect)")
        return None
    if target is not None:
        raise OptionError(f"--target is a classifier's class index; with --task {task} use "
                          + ("--class" if task == "segment" else "--boxes or --top-boxes"))
    if not isinstance(iou, (int, float)) or isinstance(iou, bool) or not 0 <= iou < 1:
        raise OptionError(f"iou must be a number in [0, 1); got {iou!r}")
    if task == "segment":
        if boxes or top_boxes is not None:
            raise OptionError("--boxes / --top-boxes belong to --task detect; a segmentation audit takes --class and "
                              "optionally --masks")
        if category is None or isinstance(category, bool) or not isinstance(category, (int, np.integer)) or category < 0:
            raise OptionError(f"--task segment needs --class K (category=K), the class index to explain; got {category!r}")
        if masks is not None and not Path(masks).is_dir():
            raise OptionError(f"--masks {masks} is not a folder (a folder of PNG masks named like the images)")
        return {"task": "segment", "category": int(category), "masks": None if masks is None else os.fspath(masks)}
    if category is not None or masks is not None:
        raise OptionError("--class / --masks belong to --task segment; a detection audit takes --boxes or --top-boxes")
    if ground_truth is not None:
        if boxes or top_boxes is not None:
            raise OptionError("--ground-truth gives the boxes to explain (the detections matched to its boxes); "
                              "drop --boxes / --top-boxes")
        return {"task": "detect", "boxes": None, "top_boxes": None, "iou": float(iou), "format": None,
                "ground_truth": True}
    if bool(boxes) == (top_boxes is not None):
        raise OptionError("--task detect needs the boxes to explain: --boxes FILE.json ({image: [{\"box\": [x1, y1, x2, "
                          "y2], \"label\": k}]}) or --top-boxes N (the model's own N best boxes), one of the two")
    if top_boxes is not None and (isinstance(top_boxes, bool) or not isinstance(top_boxes, (int, np.integer))
                                  or top_boxes < 1):
        raise OptionError(f"top_boxes must be an int >= 1; got {top_boxes!r}")
    return {"task": "detect", "boxes": check_detection_boxes(boxes) if boxes else None,
            "top_boxes": None if top_boxes is None else int(top_boxes), "iou": float(iou), "format": None}


def check_detection_boxes(boxes) -> dict[str, list[dict]]:
    """{image name: [{"box": [x1, y1, x2, y2], "label": k}, ...]}, validated (OptionError otherwise)."""
    if not isinstance(boxes, dict):
        raise OptionError(f"--boxes for --task detect must be a JSON object {{image name: [{{\"box\": [x1, y1, x2, y2], "
                          f"\"label\": k}}, ...]}}; got a {type(boxes).__name__}")
    for name, entries in boxes.items():
        if not isinstance(entries, list) or not entries:
            raise OptionError(f"boxes of {name!r} must be a non-empty list of {{\"box\": [x1, y1, x2, y2], \"label\": k}}")
        for e in entries:
            box = e.get("box") if isinstance(e, dict) else None
            label = e.get("label") if isinstance(e, dict) else None
            ok = (isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box)
                and box[0] < box[2] and box[1] < box[3])
            if not ok or isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise OptionError(f"a box of {name!r} must be {{\"box\": [x1, y1, x2, y2] with x1 < x2 and y1 < y2, "
                                  f"\"label\": class index >= 0}} (--task detect); got {e!r}")
    return boxes


def mask_path(task: dict, rel: str) -> Path:
    return Path(task["masks"]) / (os.path.splitext(rel)[0] + ".png")


def read_mask(task: dict, rel: str, size: tuple[int, int]) -> np.ndarray:
    """The image's mask (H, W) bool at the image file's ``size`` (InputError if missing or another size)."""
    from PIL import Image

    path = mask_path(task, rel)
    try:
        with Image.open(path) as im:
            m = np.asarray(im.convert("L")) > 0
    except OSError as e:
        raise InputError(f"cannot read the mask {path} of {rel!r}: {e}") from None
    if m.shape != tuple(size):
        raise InputError(f"the mask {path} is {m.shape[0]}x{m.shape[1]} but image {rel!r} is {size[0]}x{size[1]}; "
                         "a mask must have its image's size")
    return m


def resize_mask(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) bool -> ``hw`` by nearest neighbour."""
    from PIL import Image

    if m.shape == tuple(hw):
        return m
    return np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((hw[1], hw[0]), Image.NEAREST)) > 0


def check_items(ctx, items) -> None:
    """Before any image runs: every image has its boxes / mask, and masks have their image's size."""
    from PIL import Image

    task = ctx.cfg.task
    if task is None:
        return
    if task["task"] == "multilabel":
        from agnostic_cam.audit.multilabel import check_items as check_present

        return check_present(task, items)
    if task["task"] == "detect" and task["boxes"]:
        missing = [it.file for it in items if it.rel not in task["boxes"] and it.file not in task["boxes"]]
        if missing:
            raise OptionError(f"--boxes has no boxes for {len(missing)} image(s) (e.g. {missing[0]!r}); give boxes for "
                              "every image, or use --top-boxes N")
    if task["task"] == "segment" and task["masks"]:
        missing = [it.file for it in items if not mask_path(task, it.rel).is_file()]
        if missing:
            raise OptionError(f"--masks has no mask for {len(missing)} image(s) (e.g. {missing[0]!r}: expected "
                              f"{mask_path(task, missing[0])}); add them, or drop --masks to use the whole image")
        for it in items:
            try:
                with Image.open(it.path) as im, Image.open(mask_path(task, it.rel)) as mk:
                    if im.size != mk.size:
                        raise OptionError(f"the mask {mask_path(task, it.rel)} is {mk.size[1]}x{mk.size[0]} but image "
                                          f"{it.file!r} is {im.size[1]}x{im.size[0]}; a mask must have its image's size")
            except OSError:
                continue  # unreadable files fail later, as that image's failure


def settings(task: dict | None) -> dict | None:
    """The task's part of the audit fingerprint (mask contents included: a changed mask recomputes)."""
    if task is None or task["task"] != "segment" or not task["masks"]:
        return task
    h = hashlib.blake2b(digest_size=16)
    for p in sorted(Path(task["masks"]).rglob("*.png")):
        h.update(str(p.relative_to(task["masks"])).encode("utf-8", "surrogateescape"))
        h.update(p.read_bytes())
    return {**task, "masks_hash": h.hexdigest()}


def detect_format(ex, task: dict, out_shape: tuple) -> str:
    """'torchvision' for the packed output, else 'yolo' (a rank-3 head with 4+K >= 5 rows)."""
    from agnostic_cam.audit.detections import PACKED

    if ex.adapter.output_name == PACKED:
        return "torchvision"
    if len(out_shape) != 3 or min(out_shape[1:]) < 5:
        raise ModelError(f"--task detect needs a YOLO-style head (N, 4+K, A) or (N, A, 4+K), or boxes/labels/scores "
                         f"outputs; the explained output has shape {tuple(out_shape)} (pick the head with --output)")
    return "yolo"


def preflight(ctx, probe: np.ndarray, out: np.ndarray) -> None:
    """Checks of the model's output against the task, and one run of each gradient method."""
    from agnostic_cam.methods import get_method
    from agnostic_cam.core.capture import Needs

    task, ex = ctx.cfg.task, ctx.ex
    if task["task"] == "multilabel":
        from agnostic_cam.audit.multilabel import preflight as multilabel_preflight

        multilabel_preflight(ctx, probe, out)
    elif task["task"] == "segment":
        if out.ndim != 4:
            raise ModelError(f"--task segment needs a segmentation output (N, K, H, W); the explained output has shape "
                             f"{out.shape}" + (" (a classifier's: drop --task segment)" if out.ndim == 2 else
                                               " (pick the map with --output)"))
        if task["category"] >= out.shape[1]:
            raise OptionError(f"--class {task['category']} is out of range: the segmenter has {out.shape[1]} classes "
                              f"(0-{out.shape[1] - 1})")
    else:
        task["format"] = detect_format(ex, task, out.shape)
    grads = Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS
    for m in ctx.cfg.methods:
        if get_method(m).needs & grads:
            try:
                ex.explain(probe, m, target=probe_target(task, out))
            except InputError:
                raise
            except (AgnosticCamError, ValueError, RuntimeError, ImportError, NotImplementedError, KeyError) as e:
                raise BackendError(f"method {m!r} cannot run on this model with --task {task['task']}: {e}") from None


def probe_target(task: dict, out: np.ndarray):
    from agnostic_cam.audit.detections import top_boxes
    from agnostic_cam.targets import DetectionBoxes, SegmentationMask

    if task["task"] == "segment":
        return SegmentationMask(task["category"], np.ones(out.shape[2:]))
    if task["task"] == "multilabel":
        return 0  # the gradient methods' trial run: class 0 of the probe image
    b, lab = top_boxes(out, task["format"], 1)[0]
    return DetectionBoxes(b if len(b) else np.array([[0.0, 0.0, 1.0, 1.0]]), lab if len(lab) else [0],
                          iou=task["iou"], format=task["format"])
