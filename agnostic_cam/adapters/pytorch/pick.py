"""The PyTorch side of the automatic target layer: probe passes over the model turned into the
framework-neutral records that :func:`agnostic_cam.adapters.auto_layer.choose` (the one rule) reads."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from math import prod

from agnostic_cam.adapters.auto_layer import Record, choose
from agnostic_cam.errors import ModelError

log = logging.getLogger("agnostic_cam.adapters.auto_layer")

DEFAULT_SIZE = 224  # the side torchcam assumes when the input size is not known


def _side(v) -> tuple[int, int] | None:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(d, int) and d > 0 for d in v):
        return tuple(v)
    return None


def guess_sample_shape(model) -> tuple[int, int, int]:
    """One image's shape (C, H, W) the model was built for: a Hugging Face ``config.image_size`` /
    ``num_channels``, else the first module's ``img_size`` / ``image_size`` (timm and open_clip patch
    embeddings), else timm's ``pretrained_cfg['input_size']``, else 224 px; C from the config or the
    first convolution (3 without one)."""
    from torch import nn

    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    cfg = getattr(model, "config", None)
    c = getattr(cfg, "num_channels", None)
    c = c if isinstance(c, int) and c > 0 else (conv.in_channels if conv is not None else 3)
    hw = _side(getattr(cfg, "image_size", None))
    for m in model.modules():
        if hw is not None:
            break
        hw = _side(getattr(m, "img_size", None)) or _side(getattr(m, "image_size", None))
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size") if hw is None else None
    if hw is None and isinstance(size, (tuple, list)) and len(size) == 3:
        hw = _side(tuple(size[1:]))
    return (c, *(hw or (DEFAULT_SIZE, DEFAULT_SIZE)))


@dataclass
class Pick:
    """The automatic layer: its name (None when there is none), why, and the probe it was read from."""

    name: str | None
    reason: str
    probe: object


def torch_pick(model, sample_shape: tuple[int, ...] | None = None, select: Callable | None = None) -> Pick:
    """The automatic target layer of ``model`` for images of ``sample_shape`` (C, H, W) (guessed from
    the model when None, see :func:`guess_sample_shape`): two probe passes, a zero image and a noise
    image (tensors equal on both are weight-only). ``select(output) -> tensor``: the explained tensor
    of the model's output (raises for an unknown ``output=`` key). Raises ModelError when the model
    fails on the input."""
    import torch

    from agnostic_cam.adapters.pytorch.layers import _inside_attention, candidates, fingerprint, probe
    from agnostic_cam.adapters.pytorch.primitives import preserved
    from agnostic_cam.core.concurrency import model_lock

    guessed = sample_shape is None
    shape = guess_sample_shape(model) if guessed else tuple(sample_shape)
    par = next(model.parameters(), None)
    kw = dict(dtype=par.dtype if par is not None else torch.float32, device=par.device if par is not None else "cpu")
    with model_lock(model), preserved(model):  # hooks and forward of one thread at a time (README, "Guarantees")
        try:
            p = probe(model, torch.zeros((1, *shape), **kw))
            noise = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0)).to(**kw)
            q = probe(model, noise)
        except Exception as e:  # noqa: BLE001 - any failure of the user's model on this input
            how = " (guessed from the model; pass input_shape=(C, H, W) or a target_layer)" if guessed else ""
            raise ModelError(f"target_layer=None: to find the target layer the model runs once on an image of shape "
                             f"{(1, *shape)}{how}, but it failed: {e}. Check input_shape (C, H, W)") from None
        explained = select(q.output) if select is not None else q.output
        listed = {c.name: c for c in candidates(p)}
        layouts = {n: p.layout(n) for n, c in listed.items() if c.layout is not None}
        reached = _reached(model, noise, select, layouts)
    head = _head(q, fingerprint(explained), tuple(explained.shape)) if isinstance(explained, torch.Tensor) else ()
    readers, levels = _detection_head(q)
    head = (*head, *readers)
    records = []
    for name in sorted(p.shapes, key=lambda n: p.done_at.get(n, -1)):
        shp, c = p.shapes[name], listed.get(name)
        pos = prod(p.layout(name).chw_shape(shp)[2:]) if c is not None and c.layout is not None else 0
        main = (p.calls.get(name) == 1 and p.sums.get(name) != q.sums.get(name)
                and not _inside_attention(name, p.modules))
        records.append(Record(name, shp, c.layout if c else None, pos, main,
                              any(name == h or name.startswith(h + ".") for h in head),
                              len(shp) == 3 and p.hint(name) == "channels_last", reached.get(name, True),
                              (q.ids.get(name), q.sums.get(name)) in levels))
    name, why = choose(records)
    if name is None:
        raise ModelError(f"target_layer=None: {why} on an input of shape {(1, *shape)}; pass a target_layer "
                         "(ex.layers() lists candidates)")
    log.info("target layer %r picked automatically (%s)", name, why)
    return Pick(name, why + (f", head: {', '.join(head)}" if head else ""), p)


def _reached(model, x, select, layouts: dict) -> dict[str, bool]:
    """Per module in ``layouts`` (name -> LayerLayout): whether the gradient of a random projection of
    the explained output reaches more than one position of its map (one backward pass). Empty when the
    model cannot be differentiated (no filtering then)."""
    import numpy as np
    import torch

    from agnostic_cam.adapters.pytorch.primitives import preserved

    store: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o)) for n in layouts]
    try:
        with preserved(model), torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            out = model(xg)
            t = select(out) if select is not None else out
            names = [n for n in layouts if isinstance(store.get(n), torch.Tensor) and store[n].requires_grad]
            r = torch.randn(t.shape, generator=torch.Generator().manual_seed(1)).to(t)
            grads = torch.autograd.grad((t * r).sum(), [store[n] for n in names], allow_unused=True)
    except Exception:  # noqa: BLE001 - not differentiable here: no filtering (the pick is still checked later)
        return {}
    finally:
        for h in handles:
            h.remove()
    seen = {}
    for n, g in zip(names, grads):
        chw = np.zeros(1) if g is None else layouts[n].to_chw(g.detach().float().cpu().numpy())
        seen[n] = bool(chw.ndim in (4, 5) and (np.abs(chw).sum(axis=1) > 0).sum() > len(chw))
    return {n: seen.get(n, False) for n in layouts}


def _detection_head(q) -> tuple[tuple[str, ...], set]:
    """(modules that read three or more feature maps of several sizes and return none that another such
    module reads: a detection head, not a neck; the (id, fingerprint) of the module outputs they read,
    the levels, when there are two or more)."""
    heads = [n for n in q.reads if len(q.reads[n]) >= 3  # a block's residual reads 2 sizes: no head
             and not any(set(q.gives[n]) & set(v) for m, v in q.reads.items() if m != n)]
    top = [n for n in heads if not any(n.startswith(h + ".") for h in heads)]
    levels = {k for n in heads for k in q.reads[n]} & {(q.ids[n], q.sums[n]) for n in q.ids}
    return tuple(top), levels if len(levels) >= 2 else set()  # levels that are layers: at least two


def _head(q, print_, shape) -> tuple[str, ...]:
    """The output head: the last module returning the explained tensor and its ancestors that return it too."""
    same = [n for n in q.shapes if q.shapes[n] == shape and q.sums[n] == print_ and q.calls.get(n) == 1]
    if not same:
        return ()
    last = max(same, key=lambda n: q.done_at.get(n, -1))
    parts = last.split(".")
    top = last
    for k in range(len(parts) - 1, 0, -1):
        up = ".".join(parts[:k])
        if up in same:
            top = up
        else:
            break
    return (top,)


def torch_default_layer(model, sample_shape: tuple[int, ...] | None = None) -> str:
    """The dotted name of ``model``'s automatic target layer (see :func:`torch_pick`)."""
    return torch_pick(model, sample_shape).name


