"""Checks on a PyTorch model that turn silent or deep failures into typed errors.

- :func:`fingerprint`: what the model's weights are *now*, cheaply: per tensor its storage, its
  version counter, its shape, the sum of all its values (float32 row sums along the last axis, added
  in float64) and a strided sample of 64 of them. The sums see every element, so any edit of a whole
  tensor (also through ``.data``, whose in-place edits do not bump the parameter's version counter)
  changes the fingerprint; the sample makes a sum-preserving edit (a permutation) visible too. A NaN/Inf weight makes a sum non-finite, which
  is how non-finite weights are found: a :class:`NonFiniteError` names the tensor (buffers may hold
  -inf: additive attention masks do).
- :func:`check_model`: a model on the ``meta`` device or whose ``forward`` needs several inputs.
- :func:`forward_failure`: the model's own exception on our input, as an :class:`InputError` that
  shows the shape and the layout the model expects.
"""
from __future__ import annotations

import inspect
import itertools

import numpy as np
import torch
from torch import nn

from agnostic_cam.errors import InputError, ModelError, NonFiniteError

SAMPLE = 64  # values sampled per tensor (strided over the flattened tensor)
_ROW_SUMS = (torch.float32, torch.float64)  # summed per row first (half precision rounds row sums too coarsely)


def _tensors(model: nn.Module):
    return itertools.chain(model.named_parameters(), model.named_buffers())


def fingerprint(model: nn.Module) -> tuple:
    """A value that changes whenever the model's parameters or buffers change (see module doc).

    Raises NonFiniteError if a floating-point parameter or buffer holds NaN or Inf.
    """
    keys, sums, samples, floats = [], [], [], []
    with torch.no_grad():
        for name, t in _tensors(model):
            d = t.detach()
            keys.append((d.data_ptr(), t._version, tuple(d.shape), str(d.dtype)))
            n = d.numel()
            if n == 0:
                continue
            flat = d.reshape(-1)
            samples.append(flat[::max(1, n // SAMPLE)][:SAMPLE].to(torch.float64).cpu())
            if d.is_floating_point():
                # float32 / float64: sums along the last axis in the tensor's own precision, then a
                # float64 sum of those (a float64 sum of every value first converts the tensor: 2x slower)
                rows = d.sum(-1) if d.dim() > 1 and d.dtype in _ROW_SUMS else flat
                sums.append(rows.sum(dtype=torch.float64))
                floats.append((name, d))
    if not sums:
        return tuple(keys), None
    s = torch.stack([x.cpu() for x in sums]).numpy()
    if not np.isfinite(s).all():
        buffers = {n for n, _ in model.named_buffers()}
        for name, d in floats:
            # a buffer may hold -inf: an additive attention mask (open_clip's causal text mask)
            bad_at = (torch.isnan(d) | torch.isposinf(d)) if name in buffers else ~torch.isfinite(d)
            if bool(bad_at.any()):
                bad = int(bad_at.sum())
                raise NonFiniteError(f"the model's {name!r} holds {bad} NaN or Inf value(s); every explanation of this "
                                     "model would be meaningless. Reload or retrain the weights",
                                     where=f"model weight {name}")
    return tuple(keys), s.tobytes() + torch.cat(samples).numpy().tobytes()


def check_model(model: nn.Module) -> None:
    """Refuse models that cannot be run on an image batch at all."""
    meta = [n for n, t in _tensors(model) if t.is_meta]
    if meta:
        raise ModelError(f"the model is on the 'meta' device (e.g. {meta[0]!r} has no data): its weights were never "
                         "loaded. Materialise it first, e.g. model.to_empty(device='cpu') then load_state_dict(...)")
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # builtins / scripted modules without a signature
        return
    required = [p for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if len(required) > 1:
        names = ", ".join(p.name for p in required)
        raise ModelError(f"the model's forward takes {len(required)} required inputs ({names}); explaining needs a "
                         "model of one image batch. Wrap it: a module whose forward(x) calls the model with the "
                         "other inputs fixed")


def forward_failure(e: Exception, shape: tuple, channels: int | None) -> InputError:
    """The model raised ``e`` on a batch of ``shape``: say what the model expects instead."""
    hint = ""
    if len(shape) == 5:
        hint = (" A rank-5 batch is read as volumes / clips (N, C, D, H, W); if the model takes images, "
                "input_shape is the shape of one image (C, H, W), without the batch axis.")
    elif len(shape) == 4 and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        hint = (" The batch looks channels-last (NHWC); PyTorch models take NCHW: "
                "images.transpose(0, 3, 1, 2).")
    elif channels is None:
        hint = " Pass input_shape=(C, H, W) to from_torch so the input is checked before the model runs."
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return InputError(f"the model failed on the input batch of shape {tuple(shape)} (the model's layout is NCHW): "
                      f"{type(e).__name__}: {first[:300]}.{hint}")


def first_conv_channels(model: nn.Module) -> int | None:
    """in_channels of the model's first registered Conv2d, a guess at what the input must have."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            return None
    return None


__all__ = ["SAMPLE", "check_model", "first_conv_channels", "fingerprint", "forward_failure"]
