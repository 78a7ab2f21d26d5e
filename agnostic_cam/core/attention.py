"""What attention methods receive: each block's attention probabilities (and their gradients), with
the token bookkeeping done once.

A ViT's T tokens are ``prefix`` leading tokens (class, distillation, register tokens: DINOv2 with
registers has 1 + 4) then a row-major patch grid (h, w). :func:`split_tokens` works the split out
from T, the input size and the patch grids the graph holds; where more than one split fits it
raises a LayoutError asking for ``prefix_tokens=`` (never guessed). Framework-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.errors import InputError, LayoutError, ModelError
from agnostic_cam.targets import TargetSpec, select_scores


@dataclass
class AttentionCapture:
    """names: the attention tensors, in block order; maps: their values [(N, heads, T, T)];
    grads: d(score)/dA for each (``Needs.ATTENTION_GRADIENTS``, else None); block_grads: d(s_l)/dA_l,
    s_l the score read from block l's own tokens (``Needs.BLOCK_GRADIENTS``, else None);
    prefix: leading non-patch tokens; grid: the patch grid (h, w)."""

    names: list[str]
    maps: list[np.ndarray]
    grads: list[np.ndarray] | None
    block_grads: list[np.ndarray] | None
    prefix: int
    grid: tuple[int, int]

    @property
    def tokens(self) -> int:
        return self.maps[0].shape[-1]

    def patch_map(self, rows: np.ndarray) -> np.ndarray:
        """Token rows (N, T) -> their patch tokens as maps (N, h, w) (prefix tokens dropped)."""
        h, w = self.grid
        return np.ascontiguousarray(rows[:, self.prefix:]).reshape(rows.shape[0], h, w)

    def query_rows(self, r: np.ndarray) -> np.ndarray:
        """The class token's row (N, T) of token-to-token relevance r (N, T, T); without a class
        token (prefix 0: a mean-pooled head) the mean of every row."""
        return r[:, 0] if self.prefix else r.mean(axis=1)


def split_tokens(tokens: int, input_hw: tuple[int, int], prefix: int | None = None,
                 grids: list | tuple = ()) -> tuple[int, tuple[int, int]]:
    """(prefix, (h, w)) with T = prefix + h*w for images of size ``input_hw``; ``prefix`` given by the
    user or worked out (a grid seen in the graph settles a tie). LayoutError when it stays ambiguous."""
    splits = L.grid_candidates(tokens, tuple(input_hw), max_prefix=max(16, prefix or 0))
    if prefix is not None:
        splits = [s for s in splits if s[0] == prefix]
    seen = {tuple(g) for g in grids}
    if len(splits) > 1 and seen:
        splits = [s for s in splits if (s[1], s[2]) in seen] or splits
    if len(splits) == 1:
        p, h, w = splits[0]
        return p, (h, w)
    given = f" with prefix_tokens={prefix}" if prefix is not None else ""
    what = f"{len(splits)} splits (prefix, h, w) fit: {splits[:4]}" if splits else "no prefix + h*w patch grid fits"
    raise LayoutError(f"the attention maps have {tokens} tokens for {input_hw[0]}x{input_hw[1]} images{given}: {what}. "
                      "Say how many leading tokens are not patches (class, distillation, register tokens), e.g. "
                      "explain(..., prefix_tokens=1) for a ViT, 5 for DINOv2 with 4 registers")


def pick(layers: list, attention) -> list:
    """The attention tensors the user asked for: None (all), or names / node names / block indices."""
    if attention is None:
        return list(layers)
    wanted = attention if isinstance(attention, (list, tuple)) else [attention]
    out = []
    for w in wanted:
        hit = [a for a in layers if (isinstance(w, (int, np.integer)) and not isinstance(w, bool) and a.block == w)
               or (isinstance(w, str) and w in (a.name, a.node))]
        if not hit:
            raise InputError(f"no attention tensor {w!r}; this model's (ex.layers(kind='attention')): "
                             f"{[a.name for a in layers]} (or their block indices 0..{len(layers) - 1})")
        out += [a for a in hit if a not in out]
    return sorted(out, key=lambda a: a.block)


def gather(src, x: np.ndarray, spec: TargetSpec, final: bool, per_block: bool, attention=None,
           prefix: int | None = None) -> tuple:
    """(outputs, scores, classes, :class:`AttentionCapture`) for the batch ``x`` from an attention
    source (:class:`~agnostic_cam.adapters.attention.AttentionSource`): the maps alone (one forward
    pass), or with d(score)/dA (``final``) and d(s_l)/dA_l (``per_block``)."""
    with src.pinned(x.shape[1:]):  # one engine (one check of the model's weights) for the whole capture
        outputs, scores, classes, names, maps, grads, block = _values(src, x, spec, final, per_block, attention)
        grids = src.patch_grids(x.shape[1:])
    tokens = {m.shape[-1] for m in maps}
    if len(tokens) != 1:
        raise ModelError(f"the chosen attention maps have different token counts {sorted(tokens)}; pick blocks "
                         "of one stage with attention=[...]")
    p, grid = split_tokens(tokens.pop(), L.spatial_size(x.shape, src.layout), prefix, grids)
    return outputs, scores, classes, AttentionCapture(names, maps, grads, block, p, grid)


def _values(src, x: np.ndarray, spec: TargetSpec, final: bool, per_block: bool, attention) -> tuple:
    """(outputs, scores, classes, names, maps, grads, block_grads) of the chosen attention tensors."""
    layers = src.attention_layers(x.shape[1:])
    if not layers:
        raise ModelError("no attention probabilities found in this model's graph (a Softmax over keys of shape "
                         "(N, heads, T, T)); attention methods explain transformers. For other models use a CAM, "
                         "e.g. method='gradcam'")
    names = [a.name for a in pick(layers, attention)]
    if final or per_block:
        r = src.attention_gradients(x, spec, names, final=final, per_block=per_block)
        outputs, scores, classes, maps = r["outputs"], r["scores"], r["classes"], r["maps"]
        grads, block = r["grads"], r["block_grads"]
    else:
        outputs, maps = src.attention_maps(x, names)
        classes = spec.indices(outputs)
        scores, grads, block = select_scores(outputs, classes, spec.fn), None, None
    return outputs, scores, classes, names, maps, grads, block
