"""The automatic target layer: the last main-path feature map before global pooling / the head.

One rule (:func:`choose`), written once over framework-neutral records; the PyTorch path
(:func:`agnostic_cam.adapters.pytorch.pick.torch_pick`) feeds it probe passes over the model. The layer is
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

No framework import.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from agnostic_cam.errors import ModelError

log = logging.getLogger(__name__)



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
    ok = [r for r in records if r.main_path and r.reached and not r.in_head and len(r.shape) in (3, 4, 5)
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
