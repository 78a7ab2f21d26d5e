"""Layouts of image batches and layer tensors, in one place.

Image batches are ``"NCHW"`` (channels-first) or ``"NHWC"`` (channels-last); the batch's rank says
whether it holds images (N, C, H, W) or volumes / clips (N, C, D, H, W) (channels-last:
(N, D, H, W, C)), so the image functions below take any rank. Layer tensors are described by a
:class:`LayerLayout`: ``"NCHW"`` (N, C, h, w), ``"NHWC"`` (N, h, w, C: Swin, Keras, torchvision
ConvNeXt blocks), their volume forms ``"NCDHW"`` (N, C, d, h, w: 3-D convolutions) and ``"NDHWC"``
(N, d, h, w, C: Video Swin, Keras ``Conv3D``), or ``"tokens"`` (N, T, C) with ``prefix`` leading
class / register / distillation tokens followed by a row-major patch grid ``(h, w)`` or
``(t, h, w)`` (tubelets), T = prefix + prod(grid). Every CAM formula works on the channel-first
view (N, C, *grid) that :meth:`LayerLayout.to_chw` gives; everything else in the library asks this
module for axes and conversions.

Pure NumPy: no framework import.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agnostic_cam.errors import LayoutError, OptionError

NCHW = "NCHW"
NHWC = "NHWC"
NCDHW = "NCDHW"
NDHWC = "NDHWC"
TOKENS = "tokens"
IMAGE_LAYOUTS = (NCHW, NHWC)
LAYER_KINDS = (NCHW, NHWC, NCDHW, NDHWC, TOKENS)
CHANNELS_FIRST = (NCHW, NCDHW)
_RANK = {NCHW: 4, NHWC: 4, NCDHW: 5, NDHWC: 5, TOKENS: 3}


# -- image batches ---------------------------------------------------------------------------------
def image_layout(layout: str) -> str:
    """``layout`` normalised to 'NCHW' / 'NHWC'; OptionError otherwise."""
    if isinstance(layout, str) and layout.upper() in IMAGE_LAYOUTS:
        return layout.upper()
    raise OptionError(f"layout must be 'NCHW' or 'NHWC'; got {layout!r}")


def channel_axis(layout: str, ndim: int = 4) -> int:
    """Channel axis of a rank-``ndim`` batch in ``layout`` (4: images, 5: volumes)."""
    return 1 if layout in CHANNELS_FIRST else ndim - 1


def spatial_axes(layout: str, ndim: int = 4) -> tuple[int, ...]:
    """(H axis, W axis) of a rank-4 batch in ``layout``; (D, H, W) axes of a rank-5 one."""
    return tuple(range(2, ndim)) if layout in CHANNELS_FIRST else tuple(range(1, ndim - 1))


def spatial_size(shape: tuple, layout: str) -> tuple:
    """(H, W) of a rank-4 batch shape in ``layout``; (D, H, W) of a rank-5 one."""
    return tuple(shape[a] for a in spatial_axes(layout, len(shape)))


def channels(shape: tuple, layout: str):
    """The channel count of a rank-4 (or rank-5) batch shape in ``layout``."""
    return shape[channel_axis(layout, len(shape))]


def sample_shape(c, hw: tuple, layout: str) -> tuple:
    """One image's shape, (C, H, W) or (H, W, C), from its channels and (H, W) (or (D, H, W))."""
    return (c, *hw) if layout == NCHW else (*hw, c)


def shape_text(layout: str, batch: bool = True, ndim: int = 4) -> str:
    """'(N, C, H, W)' or '(N, H, W, C)' (without N when ``batch`` is False; with D when ``ndim`` is 5),
    for messages."""
    space = "D, H, W" if ndim == 5 else "H, W"
    body = f"C, {space}" if layout == NCHW else f"{space}, C"
    return f"(N, {body})" if batch else f"({body})"


def to_chw(a: np.ndarray, layout: str) -> np.ndarray:
    """A batch in ``layout`` -> channel-first (N, C, H, W) (volumes: (N, C, D, H, W)), contiguous."""
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if layout in (NHWC, NDHWC) else a


def from_chw(a: np.ndarray, layout: str) -> np.ndarray:
    """A channel-first (N, C, H, W) (or (N, C, D, H, W)) batch -> ``layout``, contiguous."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if layout in (NHWC, NDHWC) else a


def transpose_fix(layout: str, ndim: int = 4) -> str:
    """The NumPy call that turns the other layout into ``layout``, for messages."""
    if ndim == 5:
        return "x.transpose(0, 4, 1, 2, 3)" if layout == NCHW else "x.transpose(0, 2, 3, 4, 1)"
    return "x.transpose(0, 3, 1, 2)" if layout == NCHW else "x.transpose(0, 2, 3, 1)"


def expand_mask(masks: np.ndarray, layout: str) -> np.ndarray:
    """Masks (M, H, W) (or (M, D, H, W)) with a channel axis added, to multiply a batch in ``layout``."""
    return masks[:, None] if layout == NCHW else masks[..., None]


# -- layer tensors ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerLayout:
    """How a layer tensor holds channels and positions.

    kind: 'NCHW', 'NHWC', 'NCDHW', 'NDHWC' or 'tokens'. For tokens: ``prefix`` leading non-patch
    tokens (class, distillation, registers) and ``grid``, the patch grid (h, w) or tubelet grid
    (t, h, w) in row-major order; None means "work it out from the tensor's shape and the input
    size" (see :func:`grid_candidates`).
    """

    kind: str = NCHW
    prefix: int = 0
    grid: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.kind not in LAYER_KINDS:
            raise OptionError(f"layer_layout must be one of {LAYER_KINDS}; got {self.kind!r}")
        if self.kind != TOKENS and (self.prefix or self.grid):
            raise OptionError("prefix and grid only apply to layer_layout='tokens'")
        if self.prefix < 0:
            raise OptionError(f"prefix must be >= 0; got {self.prefix}")
        if self.grid is not None and len(self.grid) not in (2, 3):
            raise OptionError(f"grid is (h, w) or, for tubelets, (t, h, w); got {self.grid!r}")

    @property
    def rank(self) -> int:
        return _RANK[self.kind]

    @property
    def channel_axis(self) -> int:
        """Channel axis of the native tensor (ablating a channel zeroes it along every other axis)."""
        return 1 if self.kind in CHANNELS_FIRST else -1

    def __str__(self) -> str:
        if self.kind != TOKENS:
            return self.kind
        grid = "?" if self.grid is None else "x".join(str(g) for g in self.grid)
        return f"tokens(prefix={self.prefix}, grid={grid})"

    def to_chw(self, a: np.ndarray) -> np.ndarray:
        """Native tensor -> channel-first (N, C, *grid) float array (prefix tokens dropped)."""
        if self.kind in CHANNELS_FIRST:
            return a
        if self.kind != TOKENS:
            return np.ascontiguousarray(np.moveaxis(a, -1, 1))
        grid = self._grid(a.shape)
        n, _, c = a.shape
        return np.ascontiguousarray(np.moveaxis(a[:, self.prefix:, :].reshape(n, *grid, c), -1, 1))

    def from_chw(self, a: np.ndarray) -> np.ndarray:
        """Channel-first (N, C, *grid) -> the native tensor; tokens only without prefix tokens
        (their values cannot be made up)."""
        if self.kind in CHANNELS_FIRST:
            return a
        if self.kind != TOKENS:
            return np.ascontiguousarray(np.moveaxis(a, 1, -1))
        if self.prefix:
            raise LayoutError(f"a {self} tensor cannot be rebuilt from its patch grid alone: its "
                              f"{self.prefix} prefix token(s) have no place in (N, C, h, w)")
        n, c = a.shape[:2]
        return np.ascontiguousarray(np.moveaxis(a, 1, -1).reshape(n, -1, c))

    def chw_shape(self, shape: tuple) -> tuple:
        """The channel-first shape (N, C, *grid) of a native tensor shape."""
        if self.kind in CHANNELS_FIRST:
            return tuple(shape)
        if self.kind != TOKENS:
            return (shape[0], shape[-1], *shape[1:-1])
        return (shape[0], shape[2], *self._grid(shape))

    def _grid(self, shape: tuple) -> tuple[int, ...]:
        if self.grid is None:
            raise LayoutError("a tokens layout needs its patch grid (h, w) or (t, h, w); pass "
                              "layer_layout=LayerLayout('tokens', prefix=..., grid=(h, w))")
        grid = tuple(self.grid)
        if len(shape) != 3 or shape[1] != self.prefix + int(np.prod(grid)):
            lay = "x".join(str(g) for g in grid)
            raise LayoutError(f"a tensor of shape {tuple(shape)} does not hold {self.prefix} prefix token(s) and a "
                              f"{lay} patch grid (N, {self.prefix + int(np.prod(grid))}, C); check layer_layout=")
        return grid


def as_layer_layout(value) -> LayerLayout | None:
    """``layer_layout=`` as given by a user: None (detect), 'NCHW', 'NHWC', 'NCDHW', 'NDHWC', 'tokens' or a
    LayerLayout."""
    if value is None or isinstance(value, LayerLayout):
        return value
    if isinstance(value, str):
        key = value.strip()
        key = key.lower() if key.lower() == TOKENS else key.upper()
        return LayerLayout(key)
    raise OptionError("layer_layout must be None, 'NCHW', 'NHWC', 'NCDHW', 'NDHWC', 'tokens' or a LayerLayout; "
                      f"got {type(value).__name__}")


def _stride_ok(hw: tuple, input_hw: tuple) -> bool:
    """Whether a map of size ``hw`` can be the image ``input_hw`` seen at one stride (both axes alike).
    Volumes and clips: a map (d, h, w) of an input (D, H, W) has (h, w) at one stride and 1 <= d <= D
    (video networks stride time differently from space)."""
    if len(hw) == 3 and len(input_hw) == 3:
        d, ind = hw[0], input_hw[0]
        ok = all(isinstance(v, (int, np.integer)) and v > 0 for v in (d, ind)) and d <= ind
        return ok and _stride_ok(tuple(hw[1:]), tuple(input_hw[1:]))
    if len(hw) != 2 or len(input_hw) != 2:
        return False
    (h, w), (ih, iw) = hw, input_hw
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in (h, w, ih, iw)):
        return False
    if h > ih or w > iw:
        return False
    rh, rw = ih / h, iw / w
    return abs(rh - rw) <= 0.25 * max(rh, rw) + 1e-9


def fits_input(hw: tuple, input_hw: tuple) -> bool:
    """Whether a map of size ``hw`` (h, w) can be an image of size ``input_hw`` (H, W) seen at one
    stride: what a spatial layer looks like (a per-head attention tensor (T, heads) does not)."""
    return _stride_ok(tuple(hw), tuple(input_hw))


def reshape_channel_axis(native: tuple, chw: tuple) -> int | None:
    """The channel axis of a layer tensor of shape ``native`` that a user's ``reshape=`` turns into
    (N, C, h, w) of shape ``chw``: -1 when its last axis has C entries (pytorch-grad-cam's
    ``AblationLayerVit`` reading), 1 when axis 1 has, None when neither (unknown)."""
    if native and native[-1] == chw[1]:
        return -1
    return 1 if native and len(native) > 1 and native[1] == chw[1] else None


def grid_candidates(tokens: int, input_hw: tuple, max_prefix: int = 16) -> list[tuple[int, ...]]:
    """(prefix, h, w) splits of ``tokens`` whose grid (h, w) has one stride over the input (H, W);
    for a clip or volume (D, H, W): (prefix, t, h, w) splits with t dividing D (tubelets)."""
    if len(input_hw) == 3:
        d = input_hw[0]
        return [(p, t, h, w) for t in range(1, d + 1) if d % t == 0 for prefix in range(0, max_prefix + 1)
                if tokens - prefix > 0 and (tokens - prefix) % t == 0
                for p, h, w in grid_candidates((tokens - prefix) // t + prefix, input_hw[1:], max_prefix)
                if p == prefix]
    ih, iw = input_hw
    out = []
    for h in range(1, ih + 1):
        for prefix in range(0, max_prefix + 1):
            rest = tokens - prefix
            if rest <= 0 or rest % h:
                continue
            w = rest // h
            if _stride_ok((h, w), input_hw) and ih % h == 0 and iw % w == 0:
                out.append((prefix, h, w))
    return out


@dataclass(frozen=True)
class Candidate:
    """A candidate target layer as ``Explainer.layers()`` lists it: its name (what ``target_layer``
    takes), the op or module type producing it, its shape for one batch, and its layout ('NCHW',
    'NHWC', 'tokens(prefix=1, grid=14x14)', or None when ambiguous: pass ``layer_layout=``)."""

    name: str
    op_type: str
    shape: tuple
    layout: str | None
    node: str = ""

    def __str__(self) -> str:
        lay = self.layout or "ambiguous: pass layer_layout="
        return f"{self.name}  {self.op_type}  {'x'.join(str(d) for d in self.shape)}  {lay}"

