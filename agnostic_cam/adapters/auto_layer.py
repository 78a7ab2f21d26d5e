"""The automatic target layer: the last main-path feature map before global pooling / the head.

One rule (:func:`choose`), written once over framework-neutral records; the PyTorch path
(:func:`torch_pick`) feeds it probe passes over the model. The layer is
the last tensor, in forward order, that is an image map (N, C, h, w) / (N, h, w, C) or a token grid
(N, T, C) (class / distillation / register tokens counted; the grid from the patch embedding's stride
and the input size) with more than one position, and is none of:

- a per-head attention tensor (N, heads, T, d), or anything inside an attention block;
- a tensor built from weights only (the same for two different inputs: relative position biases);
- a tensor at whose positions the explained output does not look (its gradient reaches at most one
  position): a class-token ViT's last block output and final norm, read only at the class token, so
  such a ViT gets the last block's first norm (the input of its last attention), as in
  pytorch-grad-cam's ViT recipe, while mean-pooled token models keep their final norm;
- the output head: the module that returns the explained output and its ancestors that return the
  same tensor (a classifier, a segmenter's decode head; so a segmenter gets the last backbone / neck
  feature before its decode head);
- a module called more than once per forward pass (its activation would be ambiguous).

For a mean-pooled token model that is the final norm, for Swin-style models the last stage's norm,
for a CNN the last stage (never the patch-embedding stem: token tensors come later).
When a later token tensor exists whose grid cannot be read, the pick is refused instead of falling
back to the stem. Below, the older rank-4-only rule (:func:`last_spatial`), used for Keras:

``Explainer.from_torch(model)`` and ``from_keras(model)`` without a ``target_layer`` pick, like
torchcam's ``locate_candidate_layer``, the layer whose output comes last in the forward pass among
those that are still a spatial map ``(N, C, h, w)`` / ``(N, h, w, C)`` with more than one position.
For a CNN classifier that is the feature extractor's output, just before global pooling or
flattening (``"layer4"`` in a ResNet, ``"features"`` in a DenseNet, MobileNet or EfficientNet).
``from_onnx`` applies the same rule to the graph's tensors (:func:`~agnostic_cam.adapters.onnx.layers.default_layer`).

Differences from torchcam, both on purpose: the model itself (a fully convolutional model whose
output is a map) is never picked, and neither is a module called more than once per forward pass
(a reused ``nn.ReLU``), whose activation would be ambiguous.

PyTorch is imported inside the functions, so this module imports without it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from math import prod

from agnostic_cam.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_SIZE = 224  # the side torchcam assumes when the input size is not known


def has_extent(shape: tuple, spatial: tuple[int, int]) -> bool:
    """True for a rank-4 ``shape`` whose spatial dims (``spatial`` axes) hold more than one position;
    unknown (None) dims count as spatial."""
    if len(shape) != 4:
        return False
    dims = [shape[a] for a in spatial]
    return any(d is None for d in dims) or dims[0] * dims[1] > 1


def last_spatial(records: Iterable[tuple[str, tuple]], spatial: tuple[int, int] = (2, 3)) -> str | None:
    """The name of the last record ``(name, output shape)`` with a spatial extent (forward order)."""
    pick = None
    for name, shape in records:
        if has_extent(tuple(shape), spatial):
            pick = name
    return pick


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


@dataclass(frozen=True)
class Record:
    """One layer tensor as :func:`choose` sees it, in forward order."""

    name: str
    shape: tuple
    layout: str | None  # 'NCHW', 'NHWC', 'tokens(...)'; None: cannot be told
    positions: int  # h * w of its map (0 when unknown)
    main_path: bool  # not inside attention, not weight-only, not reused
    in_head: bool  # part of the output head
    token_like: bool = False  # rank 3 with its last axis normalised / projected (a token tensor)
    reached: bool = True  # the explained output's gradient reaches more than one of its positions


def choose(records: list[Record]) -> tuple[str | None, str]:
    """(name, why) of the automatic target layer (see the module docstring); (None, why not)."""
    ok = [r for r in records if r.main_path and r.reached and not r.in_head and len(r.shape) in (3, 4)
          and (r.positions > 1 or (r.layout is None and len(r.shape) == 4 and has_extent(r.shape, (2, 3))))]
    if not ok:
        return None, "no module outputs an image map or token grid with more than one position before the head"
    pick = ok[-1]
    later = [r for r in records[records.index(pick) + 1:] if r.main_path and r.reached and not r.in_head
             and r.token_like
             and r.layout is None]
    if later:
        return None, (f"the last feature tensor, {later[-1].name!r} of shape {later[-1].shape}, is a token tensor whose "
                      f"patch grid cannot be told from the input size and the patch embedding; pass target_layer="
                      f"{later[-1].name!r} with layer_layout=LayerLayout('tokens', prefix=..., grid=(h, w))")
    return pick.name, "the last main-path feature map before the head that the output looks at"


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
    records = []
    for name in sorted(p.shapes, key=lambda n: p.done_at.get(n, -1)):
        shp, c = p.shapes[name], listed.get(name)
        pos = prod(p.layout(name).chw_shape(shp)[2:]) if c is not None and c.layout is not None else 0
        main = (p.calls.get(name) == 1 and p.sums.get(name) != q.sums.get(name)
                and not _inside_attention(name, p.modules))
        records.append(Record(name, shp, c.layout if c else None, pos, main,
                              any(name == h or name.startswith(h + ".") for h in head),
                              len(shp) == 3 and p.hint(name) == "channels_last", reached.get(name, True)))
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
        seen[n] = bool(chw.ndim == 4 and (np.abs(chw).sum(axis=1) > 0).sum() > len(chw))
    return {n: seen.get(n, False) for n in layouts}


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


def keras_default_layer(chains: list[tuple], static_shape) -> tuple:
    """The chain (outer model's layer, ..., layer) of the last layer, in graph order, whose static
    output shape is a spatial (N, h, w, C) map; ``static_shape(layer)`` gives a shape or None."""
    by_id = {id(c): c for c in chains}
    pick = last_spatial((id(c), static_shape(c[-1]) or ()) for c in chains)
    if pick is None:
        raise ModelError("target_layer=None: no layer of the model outputs a spatial (N, h, w, C) map with more than "
                         "one position; pass a target_layer")
    chain = by_id[pick]
    log.info("target layer %r picked automatically (last spatial layer before global pooling)",
             "/".join(ly.name for ly in chain))
    return chain
