"""Telling a layer tensor's layout (:class:`~agnostic_cam.core.layout.LayerLayout`) from its shape, the
input size and what the framework says, and checking a declared one against the tensor.

- :func:`detect_layer_layout`: NCHW / NHWC / tokens from the shape, a hint ('channels_first' when a
  convolution made it, 'channels_last' when its last axis is normalised / projected) and the model's
  patch grids (convolution outputs: a ViT's patch embedding); token grids after Swin-style patch
  merging are the patch grid divided by k x k (:func:`narrow_splits`).
- :func:`resolve_layer_layout`: a declared ``layer_layout=`` completed (a tokens grid worked out) and
  checked: a per-head attention tensor (N, heads, T, d) is refused under every layout, and a reading
  that does not see the input at one stride (a token tensor or a channels-last one declared NCHW)
  is refused with the right reading named. No message suggests an option that misreads the tensor.

Pure NumPy: no framework import.
"""
from __future__ import annotations

from agnostic_cam.core.layout import (CHANNELS_FIRST, NCDHW, NCHW, NDHWC, NHWC, TOKENS, LayerLayout, _stride_ok,
                                     grid_candidates)
from agnostic_cam.errors import LayoutError


def narrow_splits(splits: list[tuple[int, int, int]], grids: list | None) -> list[tuple[int, int, int]]:
    """The token splits (prefix, h, w) that the model's patch grids (``grids``: (h, w) of its convolution
    outputs, e.g. the patch embedding's) allow: a grid seen as it is; else one the patch grid becomes
    after merging k x k patches (Swin-style stages), with the fewest prefix tokens; else all of them."""
    if not grids:
        return splits
    seen = {tuple(g) for g in grids}
    exact = [s for s in splits if tuple(s[1:]) in seen]
    if exact:
        return exact
    derived = [s for s in splits if _prod(s[1:]) > 1 and any(_merged(g, s[1:]) for g in seen)]
    if derived:
        least = min(s[0] for s in derived)
        return [s for s in derived if s[0] == least]
    return splits


def _prod(grid) -> int:
    out = 1
    for g in grid:
        out *= g
    return out


def _merged(seen: tuple, grid: tuple) -> bool:
    """Whether ``grid`` is the patch grid ``seen`` after merging k x k patches (time, in a tubelet grid,
    may be merged by another factor)."""
    if len(seen) != len(grid) or any(a % b for a, b in zip(seen, grid)):
        return False
    return seen[-2] // grid[-2] == seen[-1] // grid[-1]


def token_axis(n: int, grids: list | None, max_prefix: int = 16) -> tuple[int, int, int] | None:
    """(prefix, h, w) when an axis of ``n`` entries holds prefix tokens and an h x w patch grid the model
    shows (``grids``), i.e. a token axis; None otherwise."""
    for gh, gw in {tuple(g) for g in grids or ()}:
        if gh * gw >= 4 and 0 <= n - gh * gw <= max_prefix:
            return (n - gh * gw, gh, gw)
    return None


def _per_head(shape: tuple, hw: tuple, grids: list | None, name: str) -> LayoutError | None:
    """A LayoutError when a rank-4 tensor read with spatial dims ``hw`` has a token axis there instead
    (a per-head attention tensor (N, heads, T, d)), which no layout option reads as an image map."""
    seen = {tuple(g) for g in grids or ()}
    if tuple(hw) in seen:
        return None
    for d in hw:
        tok = token_axis(d, grids)
        if tok is not None:
            return LayoutError(
                f"{name} outputs shape {tuple(shape)}: an axis of {d} entries is a token axis ({tok[0]} prefix "
                f"token(s) + the {tok[1]}x{tok[2]} patch grid), so this is a per-head attention tensor "
                "(N, heads, T, d), not an image map under any layer_layout. Pick a block's output or its norm "
                "(ex.layers() lists them; target_layer=None picks the last one)")
    return None


def detect_layer_layout(shape: tuple, input_hw: tuple, hint: str | None = None, grids: list | None = None,
                        layer: str = "") -> LayerLayout:
    """The layout of a layer tensor of ``shape`` (batch first) for images of size ``input_hw``.

    hint: 'channels_last' or 'channels_first' when the framework tells (the op producing the
    tensor normalises / projects its last axis, or is a convolution); grids: patch grids (h, w)
    seen in the model (e.g. the patch embedding's output), which settle a token split.
    Raises LayoutError when the tensor can be read more than one way and nothing settles it.
    """
    ask = ("pass layer_layout='NCHW', 'NHWC' or 'tokens' (or LayerLayout('tokens', prefix=1, grid=(h, w))), "
           "or reshape= a function to (N, C, h, w)")
    name = f"layer {layer!r}" if layer else "the layer"
    if len(shape) == 4:
        first, last = _stride_ok(shape[2:], input_hw), _stride_ok(shape[1:3], input_hw)
        if hint == "channels_first":
            return LayerLayout(NCHW)  # a convolution's output
        if first and not last and hint != "channels_last":
            return _checked(LayerLayout(NCHW), shape, input_hw, grids, layer, stride=False)
        if hint == "channels_last" or (last and not first):
            return _checked(LayerLayout(NHWC), shape, input_hw, grids, layer, stride=False)
        head = _per_head(shape, shape[2:], grids, name) or _per_head(shape, shape[1:3], grids, name)
        if head is not None:
            raise head
        raise LayoutError(f"{name} outputs shape {tuple(shape)}, which reads as (N, C, h, w) or (N, h, w, C) for "
                          f"{input_hw[0]}x{input_hw[1]} images; {ask}")
    if len(shape) == 5:
        return _volume_layout(shape, input_hw, hint, name, ask)
    if len(shape) == 3:
        if hint == "channels_first":
            raise LayoutError(f"{name} outputs a rank-3 tensor {tuple(shape)} with channels first; {ask}")
        splits = narrow_splits(grid_candidates(shape[1], input_hw), grids)
        if len(splits) == 1 and (hint == "channels_last" or not grid_candidates(shape[2], input_hw)):
            return LayerLayout(TOKENS, splits[0][0], tuple(splits[0][1:]))
        what = (f"{len(splits)} token splits (prefix, h, w) fit: {splits[:4]}" if splits else
                "no prefix + h*w patch grid fits its token count")
        raise LayoutError(f"{name} outputs shape {tuple(shape)} (N, T, C): {what}; {ask}")
    raise LayoutError(f"{name} outputs shape {tuple(shape)}: a layer to explain is (N, C, h, w), (N, h, w, C), "
                      "(N, C, d, h, w), (N, d, h, w, C) or tokens (N, T, C); pick another layer or pass reshape=")


def _volume_layout(shape: tuple, input_dhw: tuple, hint: str | None, name: str, ask: str) -> LayerLayout:
    """NCDHW or NDHWC for a rank-5 layer tensor of clips / volumes of size ``input_dhw`` (D, H, W):
    the reading whose (d, h, w) sees the input with (h, w) at one stride and d <= D, or the
    framework's hint (a 3-D convolution: channels first)."""
    if len(input_dhw) != 3:
        raise LayoutError(f"{name} outputs a rank-5 tensor {tuple(shape)} for {len(input_dhw)}-D inputs; pick a layer "
                          "that keeps the image's own rank, or pass reshape=")
    first, last = _stride_ok(tuple(shape[2:]), input_dhw), _stride_ok(tuple(shape[1:4]), input_dhw)
    if hint == "channels_first" or (first and not last and hint != "channels_last"):
        return LayerLayout(NCDHW)
    if hint == "channels_last" or (last and not first):
        return LayerLayout(NDHWC)
    d, h, w = input_dhw
    raise LayoutError(f"{name} outputs shape {tuple(shape)}, which reads as (N, C, d, h, w) or (N, d, h, w, C) for "
                      f"{d}x{h}x{w} volumes; pass layer_layout='NCDHW' or 'NDHWC', or reshape= a function to "
                      "(N, C, d, h, w)" + ("" if first or last else f" ({ask})"))


def resolve_layer_layout(given: LayerLayout | None, shape: tuple, input_hw: tuple, hint: str | None = None,
                         grids: list | None = None, layer: str = "") -> LayerLayout:
    """``given`` completed for a tensor of ``shape`` (a tokens grid worked out), or detected when None."""
    if given is None:
        return detect_layer_layout(shape, input_hw, hint, grids, layer)
    if len(shape) != given.rank:
        raise LayoutError(f"layer {layer!r} outputs shape {tuple(shape)}, which is not a rank-{given.rank} "
                          f"{given.kind} tensor{_right_reading(shape, input_hw, hint, grids, layer)}")
    if given.kind == TOKENS and given.grid is None:
        splits = grid_candidates(shape[1], input_hw, max_prefix=max(16, given.prefix))
        if given.prefix:
            splits = [s for s in splits if s[0] == given.prefix]
        splits = narrow_splits(splits, grids)
        if len(splits) != 1:
            size = "x".join(str(d) for d in input_hw)
            raise LayoutError(f"layer {layer!r} outputs {shape[1]} tokens for {size} inputs: "
                              f"{len(splits)} (prefix, *grid) splits fit {splits[:4]}; pass "
                              "layer_layout=LayerLayout('tokens', prefix=..., grid=(h, w) or (t, h, w))")
        return LayerLayout(TOKENS, splits[0][0], tuple(splits[0][1:]))
    given.chw_shape(shape)  # validates a tokens grid against the shape
    return _checked(given, shape, input_hw, grids, layer, hint, stride=hint != _HINTS.get(given.kind))


def _right_reading(shape: tuple, input_hw: tuple, hint, grids, layer: str) -> str:
    """'; it reads as ...: pass layer_layout=...' when the tensor's own layout can be told, else a pointer
    to ex.layers(): never an option that would misread it."""
    try:
        right = detect_layer_layout(shape, input_hw, hint, grids, layer)
    except LayoutError:
        return ("; it does not read as an image map of these images under any layer_layout: pick another "
                "layer (ex.layers() lists them with their layouts)")
    spell = repr(right.kind) if right.kind != TOKENS else f"'tokens' (read as {right})"
    return f"; it reads as {right}: pass layer_layout={spell}, or leave layer_layout unset to detect it"


def _checked(lay: LayerLayout, shape: tuple, input_hw: tuple, grids, layer: str, hint=None,
             stride: bool = True) -> LayerLayout:
    """``lay`` when it reads ``shape`` as a map of ``input_hw`` images (no token axis read as rows or
    columns; with ``stride``, one stride over the image); a LayoutError that names the right reading
    otherwise: a declared layout that contradicts the tensor would give a silently wrong map."""
    if lay.kind == TOKENS or len(shape) not in (4, 5):
        return lay
    name = f"layer {layer!r}" if layer else "the layer"
    hw = tuple(shape[2:] if lay.kind in CHANNELS_FIRST else shape[1:-1])
    head = _per_head(shape, hw, grids, name) if len(shape) == 4 else None
    if head is not None:
        raise head
    if not stride or _stride_ok(hw, input_hw) or any(d is None for d in hw):
        return lay
    raise LayoutError(f"{name} outputs shape {tuple(shape)}: read as {lay.kind} its map would be "
                      f"{'x'.join(str(d) for d in hw)}, which is not a {'x'.join(str(d) for d in input_hw)} input "
                      "seen at one stride"
                      f"{_right_reading(shape, input_hw, hint, grids, layer)}")


_HINTS = {NCHW: "channels_first", NHWC: "channels_last", NCDHW: "channels_first", NDHWC: "channels_last"}
