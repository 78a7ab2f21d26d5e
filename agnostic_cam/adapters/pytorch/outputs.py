"""Structured PyTorch outputs -> the one tensor that is explained (``output=`` of ``from_torch``).

- ``output="raw"`` (default): the model's output when it is a tensor. Outputs as model hubs return
  them (a Hugging Face ``ModelOutput``, a dataclass, a dict, a namedtuple) give their first key of
  :data:`DEFAULT_KEYS`: the classification / segmentation ``logits`` (``*ForImageClassification``,
  ``*ForSemanticSegmentation``), else a CLIP-style tower's embedding (``image_embeds``,
  ``image_features`` of open_clip with ``output_dict=True``, ``pooler_output``). A torchvision
  detector's list of dicts (boxes, labels, scores per image) is packed into one (N, D, 6) tensor of
  rows [x1, y1, x2, y2, score, label], D = the detector's ``roi_heads.detections_per_img`` (else the
  batch's largest count), padded with zero boxes, score 0 and label -1 (what
  :class:`~agnostic_cam.targets.tasks.DetectionBoxes` reads with ``format="torchvision"``).
- ``output="pre_softmax"``: the input of the model's final ``nn.Softmax`` / ``nn.LogSoftmax``.
- ``output="logits"``: the ``logits`` key of a structured output; for a model that returns a tensor
  and ends in ``nn.Softmax``, the softmax's input (the older spelling of ``"pre_softmax"``).
- ``output=KEY`` (any other str): that key / field of a structured output (torchvision segmentation
  models return {'out': ..., 'aux': ...}: ``output="out"``). An unknown key is an OptionError that
  lists the keys, raised when the explainer is built where it can run the model once.
- ``output=INDEX`` (an int): ``out[INDEX]`` of a tuple / list output.
"""
from __future__ import annotations

from typing import Any

import torch

from agnostic_cam.errors import ModelError, OptionError

RAW, LOGITS, PRE_SOFTMAX = "raw", "logits", "pre_softmax"
KEYWORDS = (RAW, LOGITS, PRE_SOFTMAX)
DEFAULT_KEYS = ("logits", "out", "image_embeds", "image_features", "pooler_output")
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


def fields(out: Any) -> dict | None:
    """A structured output's tensors by name (``ModelOutput``, dict, dataclass, namedtuple; None values
    left out); None for anything else."""
    import dataclasses

    if isinstance(out, dict):
        items = dict(out.items())
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    elif isinstance(out, tuple) and hasattr(out, "_fields"):
        items = out._asdict()
    else:
        return None
    return {k: v for k, v in items.items() if v is not None}


def choice(out: Any, output: str | int) -> str | int | None:
    """The key / index of ``out`` that ``output`` explains; None for the output itself (a tensor or a
    detector's dicts). Raises OptionError for a key or index the output does not have."""
    named = fields(out)
    if isinstance(output, int) and not isinstance(output, bool):
        if not isinstance(out, (list, tuple)) or not -len(out) <= output < len(out):
            raise OptionError(f"output={output} selects an element of a tuple output; the model returns "
                              f"{_describe(out)}")
        return output
    if output in (RAW, PRE_SOFTMAX) and named is None:
        return None
    if output == RAW:
        key = next((k for k in DEFAULT_KEYS if isinstance(named.get(k), torch.Tensor)), None)
        if key is None:
            raise OptionError(f"the model returns {_describe(out)}, and none of its keys is a known score "
                              f"({', '.join(DEFAULT_KEYS)}); pick the tensor to explain with output=KEY "
                              f"(one of {_tensor_keys(named)})")
        return key
    if named is None or output not in named:
        keys = f"; its keys: {_tensor_keys(named)}" if named else ""
        if output == LOGITS:
            raise OptionError(f"output='logits' selects the 'logits' key of a structured output, or the input of a "
                              f"final nn.Softmax; the model returns {_describe(out)}{keys} and does not end in a "
                              "Softmax. A model that returns its scores as a tensor needs no output= (output='raw')")
        raise OptionError(f"output={output!r} selects a key of a structured output; the model returns "
                          f"{_describe(out)}{keys}")
    return output


def select_output(out: Any, output: str | int, model) -> torch.Tensor:
    """The explained tensor of a model output (see the module docstring)."""
    key = choice(out, output)
    if key is not None:
        out = out[key] if isinstance(key, int) else fields(out)[key]
    if is_detection(out):
        slots = getattr(getattr(model, "roi_heads", None), "detections_per_img", None)
        return pack_detections(out, slots if isinstance(slots, int) else None)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the model returns {_describe(out)}, not a tensor; pick the tensor to explain with output= "
                         "(a key, or an index into a tuple), or wrap the model in a module that returns it")
    return out


def describe(out: Any, output: str | int, pre_softmax: bool) -> str:
    """One line for ``ex.describe()``: which output is explained."""
    if pre_softmax:
        return "output: the input of the model's final softmax (pre-softmax scores)"
    key = choice(out, output)
    if key is None:
        return f"output: the model's output, {_describe(out)}"
    kind = type(out).__name__
    return f"output: {key!r} of the model's {kind}" + (f" (keys: {', '.join(fields(out) or ())})" if fields(out) else "")


def _tensor_keys(named: dict) -> list:
    return [k for k, v in named.items() if isinstance(v, torch.Tensor)]


def _describe(out: Any) -> str:
    named = fields(out)
    if named is not None:
        return f"a {type(out).__name__} with keys {list(named)}"
    if isinstance(out, (list, tuple)):
        return f"a {type(out).__name__} of {len(out)} ({', '.join(type(o).__name__ for o in out[:4])})"
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    return type(out).__name__
