"""Layer layouts of Keras models: channels-last maps (N, h, w, C), token tensors (N, T, C) of vision
transformers built from ``keras.layers``, and user ``reshape=`` functions.

A mixin of :class:`agnostic_cam.adapters.keras.adapter.KerasAdapter` (it reads the adapter's ``chain``,
``layer_name``, ``_chains``, ``input_shape``, ``_static_shape``, ``_evaluate`` and ``_name``).

How a layer's layout is told (never guessed, :func:`agnostic_cam.core.layout_detect.detect_layer_layout`):
rank-4 tensors are channels-last (Keras runs channels_last only); a rank-3 tensor (N, T, C) is a
token tensor when the layer producing it works on its last axis (``LayerNormalization`` over the
last axis, ``Dense``, ``MultiHeadAttention``, ``Conv1D``, a ``Reshape`` of an (N, h, w, C) map into
(N, h*w, C), or an element-wise layer of such tensors) and exactly one split of T into leading
class/register tokens plus a patch grid (h, w) fits the input size, the patch embedding's grid (a
``Conv2D`` output) deciding between splits. Anything else raises :class:`LayoutError`, which asks
for ``layer_layout=`` or ``reshape=``.

Inside the exported ONNX graph the layer's own tensor (``NATIVE``) stays on the model's main path,
where the tail graph (Ablation-CAM, CAM) starts; ``ACTIVATION`` is its (N, h, w, C) view (prefix
tokens dropped, the patch grid restored, or the user's reshape followed by a transpose), computed
in the same graph. Gradient methods read the same view of the layer and of d(score)/d(layer), as
pytorch-grad-cam's ``reshape_transform`` does.
"""
from __future__ import annotations

import numpy as np

import keras
import tensorflow as tf

from agnostic_cam import compat
from agnostic_cam.core import layout as L
from agnostic_cam.core import layout_detect as LD
from agnostic_cam.adapters.base import ACTIVATION, NATIVE
from agnostic_cam.errors import AgnosticCamError, LayoutError, ModelError, OptionError

_LAST_AXIS = (keras.layers.Dense, keras.layers.MultiHeadAttention, keras.layers.Conv1D, keras.layers.Embedding)
_ELEMENTWISE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dropout", "Activation", "ReLU",
                "LeakyReLU", "PReLU", "ELU", "Softmax", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                "Identity", "Relu", "Gelu", "Silu", "Sigmoid", "Tanh", "Divide", "Negative", "Absolute"}
_PATCH_CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


def _inputs(op) -> list[tuple[object, tuple]]:
    """(producing op, shape) of every input tensor of a Keras layer / op called once ([] otherwise)."""
    try:
        tensors = tf.nest.flatten(op.input)
    except (AttributeError, ValueError, RuntimeError):  # never called, or shared (several inbound nodes)
        return []
    out = []
    for t in tensors:
        try:
            out.append((compat.keras_history_operation(t), tuple(t.shape)))
        except (AgnosticCamError, AttributeError, ValueError):
            continue
    return out


def _shape(op) -> tuple:
    try:
        return tuple(op.output.shape)
    except (AttributeError, ValueError):
        return ()


def _is_token_reshape(op) -> bool:
    """A ``Reshape`` of an (N, h, w, C) map, or of (N, h, w, ph, pw, C) patches, into tokens
    (N, h*w, C) / (N, h*w, ph*pw*C): how patch embeddings built from keras.layers make tokens."""
    if not isinstance(op, keras.layers.Reshape):
        return False
    ins, out = _inputs(op), _shape(op)
    if len(ins) != 1 or len(ins[0][1]) < 4 or len(out) != 3 or None in ins[0][1][1:]:
        return False
    _, h, w, *rest = ins[0][1]
    return out[1:] == (h * w, int(np.prod(rest)))


def hint(op, memo: dict | None = None) -> str | None:
    """'channels_last' when the Keras op producing a rank-3 tensor works on its last axis, else None."""
    memo = {} if memo is None else memo
    if id(op) in memo:
        return memo[id(op)]
    memo[id(op)] = None  # cycles cannot happen in a functional graph; this also bounds the walk
    name = type(op).__name__
    found = None
    if isinstance(op, (keras.layers.LayerNormalization, keras.layers.BatchNormalization)):
        rank, axis = len(_shape(op)), op.axis
        axes = [a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])] if rank else []
        found = "channels_last" if axes == [rank - 1] else None
    elif isinstance(op, _LAST_AXIS) or _is_token_reshape(op):
        found = "channels_last"
    elif name in _ELEMENTWISE:
        own = _shape(op)
        seen = {hint(p, memo) for p, s in _inputs(op) if s == own}
        found = "channels_last" if "channels_last" in seen and "channels_first" not in seen else None
    memo[id(op)] = found
    return found


def model_grids(chains: list, shape_of) -> list[tuple[int, int]]:
    """(h, w) of every 2-D convolution output and of every map a ``Reshape`` turns into tokens:
    the patch grids that settle how a token count splits."""
    grids = []
    for c in chains:
        op = c[-1]
        if type(op).__name__ in _PATCH_CONVS:
            s = shape_of(c)
            if len(s) == 4 and None not in s[1:3]:
                grids.append(tuple(s[1:3]))
        elif _is_token_reshape(op):
            grids.append(tuple(_inputs(op)[0][1][1:3]))
    return grids


class KerasLayouts:
    """The target layer's layout (channels-last, tokens or ``reshape=``), its views and the layer listing."""

    layer_layout: L.LayerLayout | None = None  # resolved layout of the target tensor (None: reshape= or not yet)
    reshape = None
    _layout_given: L.LayerLayout | None = None
    _layout_hw: tuple | None = None  # the input (H, W) the layout was resolved for

    def _init_layouts(self, layer_layout, reshape) -> None:
        if reshape is not None and not callable(reshape):
            raise OptionError(f"reshape must be a function (N, ...) -> (N, C, h, w) of TensorFlow tensors; got "
                              f"{type(reshape).__name__}")
        if reshape is not None and layer_layout is not None:
            raise OptionError("pass either layer_layout= or reshape=, not both: reshape= already says how to read the layer")
        self._layout_given = L.as_layer_layout(layer_layout)
        self.reshape = reshape

    # -- resolution ------------------------------------------------------------------------------
    def _input_hw(self, sample_shape: tuple | None = None) -> tuple | None:
        hw = tuple((sample_shape if sample_shape is not None else self.input_shape[1:])[:-1])  # (H, W) or (D, H, W)
        return None if None in hw else hw

    def _shapes_at(self, hw: tuple, sample_shape: tuple | None) -> tuple[tuple | None, list]:
        """(target layer's shape, patch grids) for images of size ``hw``: static shapes, or one
        forward pass of a zero batch when the model's input size is dynamic."""
        static = tuple(self.input_shape[1:-1]) == hw
        shape = self._static_shape(self.layer) if static else None
        if shape is not None and None not in shape[1:]:
            return shape, model_grids(self._chains, lambda c: self._static_shape(c[-1]) or ())
        if sample_shape is None:
            return None, []
        convs = [c for c in self._chains if type(c[-1]).__name__ in _PATCH_CONVS]
        _, vals, _ = self._evaluate(tf.zeros((1, *sample_shape), tf.float32), [self.chain, *convs])
        shapes = {id(c): tuple(v.shape) for c, v in zip([self.chain, *convs], vals)}
        return shapes[id(self.chain)], model_grids(self._chains, lambda c: shapes.get(id(c), ()))

    def _ensure_layout(self, sample_shape: tuple | None = None) -> None:
        """Resolve the target layer's layout for images of one shape (H, W, C) (None: the model's
        static input size); LayoutError when it cannot be told."""
        hw = self._input_hw(sample_shape)
        if self.chain is None or hw is None or self._layout_hw == hw:
            return
        shape, grids = self._shapes_at(hw, sample_shape)
        if shape is None or (self.reshape is None and len(shape) not in (3, 4, 5)):
            return  # dynamic input size: resolved at the first call; no map at all: _check_activation says so
        if self.reshape is not None:
            chw = tuple(self._apply_reshape(tf.zeros((1, *shape[1:]), tf.float32)).shape)
            self._reshape_shapes = ((1, *shape[1:]), chw)
        else:
            op = self.chain[-1]
            h = "channels_last" if len(shape) in (4, 5) and not isinstance(op, keras.layers.Permute) else hint(op)
            try:
                self.layer_layout = LD.resolve_layer_layout(self._layout_given, shape, hw, h, grids, self.layer_name)
            except LayoutError as e:
                listed = [c.name for c in self.layers() if c.layout is not None]
                more = f"; candidate layers (ex.layers()): {', '.join(map(repr, listed[-4:]))}" if listed else ""
                raise LayoutError(f"{e}{more}") from None
        self._layout_hw = hw

    def require_layer(self, method: str = "", sample_shape: tuple | None = None) -> None:
        """The base class's check, then the layout at the images' size (a dynamic-size model's token
        grid depends on it; a cached export does not re-resolve it)."""
        super().require_layer(method, sample_shape)
        if sample_shape is not None:
            self._ensure_layout(tuple(sample_shape))

    def _apply_reshape(self, t):
        out = self.reshape(t)
        if len(getattr(out, "shape", ())) not in (4, 5):
            raise ModelError(f"reshape= must return a (N, C, h, w) tensor; for an input of shape {tuple(t.shape)} it "
                             f"returned {getattr(out, 'shape', type(out).__name__)}")
        return out

    def _chw_shape(self, shape: tuple) -> tuple | None:
        """(N, C, h, w) of a target tensor of ``shape`` (None while its layout is not resolved)."""
        if self.reshape is not None:
            return None if self._reshape_shapes is None else self._reshape_shapes[1]
        lay = self.layer_layout or ({4: L.LayerLayout(L.NHWC), 5: L.LayerLayout(L.NDHWC)}.get(len(shape)))
        return None if lay is None or len(shape) != lay.rank else lay.chw_shape(shape)

    # -- views -------------------------------------------------------------------------------------
    @property
    def _plain(self) -> bool:
        """The layer's own tensor is already the (N, h, w, C) map ACTIVATION holds."""
        return self.reshape is None and (self.layer_layout is None or self.layer_layout.kind in (L.NHWC, L.NDHWC))

    def nhwc_view(self, t):
        """The target layer's tensor (TensorFlow, traceable) as the (N, h, w, C) map CAMs read."""
        if self.reshape is not None:
            r = self._apply_reshape(t)
            return tf.transpose(r, (0, *range(2, len(r.shape)), 1))
        lay = self.layer_layout
        if self._plain:
            return t
        if lay.kind in L.CHANNELS_FIRST:
            return tf.transpose(t, (0, *range(2, len(t.shape)), 1))
        return tf.reshape(t[:, lay.prefix:, :], (-1, *lay.grid, t.shape[-1]))

    def viewed(self, chain, sample_shape: tuple) -> bool:
        """Whether the feature tools read layer ``chain`` through :meth:`nhwc_view`: the target layer
        when its tensor is not already an (N, h, w, C) map (tokens, reshape=)."""
        if self.chain is None or tuple(chain) != tuple(self.chain):
            return False
        self._ensure_layout(tuple(sample_shape))
        return not self._plain

    def export_taps(self, acts: list) -> list:
        """The tapped tensors an export returns: [layer] when plain, else [(N, h, w, C) view, layer]."""
        return list(acts) if self._plain or not acts else [self.nhwc_view(acts[0]), acts[0]]

    def eager_view(self, native: np.ndarray) -> np.ndarray:
        """The export's ACTIVATION for the layer's own tensor (export fallback): (N, h, w, C)."""
        return np.asarray(self.nhwc_view(tf.constant(np.ascontiguousarray(native, dtype=np.float32))))

    @property
    def native_name(self) -> str | None:
        if self.activation_name is None:
            return None
        return ACTIVATION if self._plain else NATIVE

    @property
    def native_layout(self) -> L.LayerLayout | None:
        return None if self.reshape is not None else (self.layer_layout or L.LayerLayout(L.NHWC))

    def describe_lines(self) -> list[str]:
        if self.chain is None:
            return []
        lay = "reshape=" if self.reshape is not None else self.layer_layout
        read = "" if lay is None else f" read as {lay}"
        return [f"layer {self.layer_name!r}{read}: {self.layer_reason or 'named by the caller'}"]

    # -- listing -----------------------------------------------------------------------------------
    def layers(self) -> list[L.Candidate]:
        """Candidate target layers, nested ones included: channels-last maps (N, h, w, C) and token
        tensors (N, T, C) whose layout can be told, with the name ``target_layer`` takes, class,
        shape and layout. Tensors that do not fit the input as one grid (per-head attention
        tensors, attention scores) are not offered."""
        hw = self._input_hw()
        grids = model_grids(self._chains, lambda c: self._static_shape(c[-1]) or ())
        memo: dict = {}
        out = []
        for c in self._chains:
            shape = self._static_shape(c[-1]) or ()
            lay = chain_layout(c[-1], shape, hw, grids, memo)
            if lay is not None and lay.kind == L.TOKENS and lay.grid[0] * lay.grid[1] <= 1:
                continue
            if lay is not None and (lay.kind != L.NHWC or None in shape[1:3] or shape[1] * shape[2] > 1):
                out.append(L.Candidate(self._name(c), type(c[-1]).__name__, shape, str(lay)))
        return out


def chain_layout(op, shape: tuple, hw: tuple | None, grids: list, memo: dict) -> L.LayerLayout | None:
    """How the output of Keras layer ``op`` of static ``shape`` is read for images of size ``hw``:
    channels-last for a rank-4 map that fits the input (never a per-head (N, T, heads, d) tensor),
    tokens where :func:`hint` and the grids tell them; None when it cannot be told."""
    if len(shape) == 4 and not isinstance(op, keras.layers.Permute):
        if None not in shape[1:3] and hw is not None and not L.fits_input(shape[1:3], hw):
            return None
        return L.LayerLayout(L.NHWC)
    if len(shape) == 3 and hw is not None and None not in shape[1:]:
        try:
            return LD.detect_layer_layout(shape, hw, hint(op, memo), grids)
        except LayoutError:
            return None
    return None
