"""Structured PyTorch outputs -> the one tensor that is explained (``output=`` of ``from_torch``).

- ``output="raw"`` (default): the model's output when it is a tensor; a torchvision detector's list
  of dicts (boxes, labels, scores per image) is packed into one (N, D, 6) tensor of rows
  [x1, y1, x2, y2, score, label], D = the detector's ``roi_heads.detections_per_img`` (else the
  batch's largest count), padded with zero boxes, score 0 and label -1 (what
  :class:`~agnostic_cam.targets.tasks.DetectionBoxes` reads with ``format="torchvision"``).
- ``output=KEY`` (a str other than 'raw' / 'logits'): ``out[KEY]`` of a dict output (torchvision
  segmentation models return {'out': ..., 'aux': ...}: ``output="out"``).
- ``output=INDEX`` (an int): ``out[INDEX]`` of a tuple / list output.
"""
from __future__ import annotations

from typing import Any

import torch

from agnostic_cam.errors import ModelError

KEYWORDS = ("raw", "logits")
DETECTION_KEYS = ("boxes", "labels", "scores")


def is_detection(out: Any) -> bool:
    return isinstance(out, (list, tuple)) and len(out) > 0 and all(
        isinstance(d, dict) and all(k in d for k in DETECTION_KEYS) for d in out)


def pack_detections(out: list[dict], slots: int | None) -> torch.Tensor:
    """A torchvision detector's per-image dicts -> (N, D, 6) [x1, y1, x2, y2, score, label]."""
    d = slots or max(1, max(len(o["scores"]) for o in out))
    rows = []
    for o in out:
        k = min(len(o["scores"]), d)
        r = torch.cat([o["boxes"][:k], o["scores"][:k, None], o["labels"][:k, None].to(o["boxes"].dtype)], 1)
        pad = torch.zeros((d - k, 6), dtype=r.dtype, device=r.device)
        pad[:, 5] = -1
        rows.append(torch.cat([r, pad]))
    return torch.stack(rows)


def select_output(out: Any, output: str | int, model) -> torch.Tensor:
    """The explained tensor of a model output (see the module docstring)."""
    if isinstance(output, int) and not isinstance(output, bool):
        if not isinstance(out, (list, tuple)) or not -len(out) <= output < len(out):
            raise ModelError(f"output={output} selects an element of a tuple output; the model returns "
                             f"{_describe(out)}")
        out = out[output]
    elif output not in KEYWORDS:
        if not isinstance(out, dict) or output not in out:
            raise ModelError(f"output={output!r} selects a key of a dict output; the model returns {_describe(out)}")
        out = out[output]
    if is_detection(out):
        slots = getattr(getattr(model, "roi_heads", None), "detections_per_img", None)
        return pack_detections(out, slots if isinstance(slots, int) else None)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the model returns {_describe(out)}, not a tensor; pick the tensor to explain with output= "
                         "(a dict key, or an index into a tuple), or wrap the model in a module that returns it")
    return out


def _describe(out: Any) -> str:
    if isinstance(out, dict):
        return f"a dict with keys {list(out)}"
    if isinstance(out, (list, tuple)):
        return f"a {type(out).__name__} of {len(out)} ({', '.join(type(o).__name__ for o in out[:4])})"
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    return type(out).__name__
