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
back to the stem.

The rule is shared by the three frameworks; each adapter only turns what its graph shows into
:class:`Record` s: PyTorch from probe passes over the modules
(:func:`agnostic_cam.adapters.pytorch.pick.torch_pick`), Keras from the functional graph's layers
(:func:`agnostic_cam.adapters.keras.pick.keras_pick`), ONNX from the graph's tensors
(:func:`agnostic_cam.adapters.onnx.layers.pick_layer`), each with :func:`record`. So ``ex.layer``,
``ex.describe()`` ("which layer and why") and the maps agree across a model and its ONNX export.

Like torchcam's ``locate_candidate_layer``, a CNN classifier gets its feature extractor's output,
just before global pooling or flattening (``"layer4"`` in a ResNet, ``"features"`` in a DenseNet,
MobileNet or EfficientNet). Differences from torchcam, both on purpose: the model itself (a fully
convolutional model whose output is a map) is never picked, and neither is a module called more
than once per forward pass (a reused ``nn.ReLU``), whose activation would be ambiguous.

No framework import.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from agnostic_cam.core import layout as L

log = logging.getLogger(__name__)

WHY = "the last main-path feature map before the head that the output looks at"


def has_extent(shape: tuple, spatial: tuple[int, int]) -> bool:
    """True for a rank-4 ``shape`` whose spatial dims (``spatial`` axes) hold more than one position;
    unknown (None) dims count as spatial."""
    if len(shape) != 4:
        return False
    dims = [shape[a] for a in spatial]
    return any(d is None for d in dims) or dims[0] * dims[1] > 1


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
    level: bool = False  # one of the feature levels a detection head reads


def choose(records: list[Record]) -> tuple[str | None, str]:
    """(name, why) of the automatic target layer (see the module docstring); (None, why not)."""
    ok = [r for r in records if r.main_path and r.reached and not r.in_head and len(r.shape) in (3, 4, 5)
          and (r.positions > 1 or (r.layout is None and len(r.shape) == 4 and has_extent(r.shape, (2, 3))))]
    # a detector: the coarsest level its head reads (on equal sizes the last computed); not filtered by
    # `reached`: which positions a detection output reads depends on which boxes one probe image gives
    levels = [r for r in records if r.level and r.main_path and not r.in_head and r.positions > 1]
    if levels:
        pick = min(reversed(levels), key=lambda r: r.positions)
        return pick.name, ("the coarsest of the feature levels the detection head reads (the neck outputs feeding it; "
                           "the most semantic, the one pytorch-grad-cam's YOLO tutorial explains: model[-2])")
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
    return pick.name, WHY


def record(name: str, shape: tuple, lay: L.LayerLayout | None, *, main_path: bool = True, in_head: bool = False,
           reached: bool = True, level: bool = False) -> Record:
    """The :class:`Record` of a tensor of ``shape`` read with layout ``lay`` (None: cannot be told); a
    map whose size is unknown (an input of any size) counts as spatial, as in torchcam."""
    positions, token = 0, lay is not None and lay.kind == L.TOKENS
    if lay is not None and len(shape) == lay.rank:
        hw = lay.grid if token else L.spatial_size(shape, lay.kind)
        known = all(isinstance(d, int) and d > 0 for d in hw)
        positions = hw[0] * hw[1] if known else 2
    return Record(name, tuple(shape), None if lay is None else str(lay), positions, main_path, in_head, token,
                  reached, level)
