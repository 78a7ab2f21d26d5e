"""The adapter contract: one per framework, the only place a framework is imported.

An adapter knows the model's layout, resolves the target layer, exports the model to ONNX with
the layer's activation as an extra output, and computes gradients with the framework's autograd.
"""
from __future__ import annotations

import difflib
import threading
from collections import OrderedDict
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.core.capture import Needs, channels_first  # noqa: F401 - channels_first re-exported
from agnostic_cam.engine import OnnxEngine
from agnostic_cam.targets import TargetSpec
from agnostic_cam.targets.dispatch import to_numpy  # noqa: F401 - re-exported for the adapters
from agnostic_cam.errors import BackendError, InputError, ModelError, NonFiniteError
from agnostic_cam.core.options import positive_int
from agnostic_cam.core.concurrency import EXPORT_LOCK
from agnostic_cam.engine.graph import ACTIVATION, NATIVE, OUTPUT  # noqa: F401 - the exported graph's tensor names


@dataclass
class Gradients:
    """What a backward pass returns. ``activations``/``grads`` are channel-first (N, C, h, w);
    ``input_grads`` is in the input's layout."""

    outputs: np.ndarray
    scores: np.ndarray
    classes: np.ndarray | None
    activations: np.ndarray | None = None
    grads: np.ndarray | None = None
    input_grads: np.ndarray | None = None


@dataclass
class Higher(Gradients):
    """:class:`Gradients` plus what ``Adapter.higher_derivatives`` adds: hvp (N, C, h, w) at the
    target layer and bias_terms [(bias (C,), d(score)/d(output) (N, C, h, w))], one per bias layer."""

    hvp: np.ndarray | None = None
    bias_terms: list = field(default_factory=list)


def closest_names(name: str, names: list[str], n: int = 5) -> str:
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.4)
    return ", ".join(repr(c) for c in close) if close else ", ".join(repr(c) for c in names[-n:])


def check_images(images: Any, layout: str, channels: int | None, spatial: tuple | None = None,
                 rank: int | None = None) -> np.ndarray:
    """Validate a batch of images for a model with ``layout`` and return it as float32.

    ``channels``: the channel count the model expects (None: any); ``spatial``: (H, W) with
    None for dynamic dims, or None when the model takes any size.
    """
    x = to_numpy(images)
    if x.dtype == object:
        raise InputError("images must be a numeric array (N, ...) or tensor; got an object array")
    shape_txt = L.shape_text(layout, ndim=x.ndim if x.ndim == 5 else 4)
    if x.ndim not in (4, 5):
        hint = " Add a batch dimension: images[None]." if x.ndim == 3 else ""
        raise InputError(f"images must be a rank-4 batch {shape_txt} in the model's layout ({layout}), or a rank-5 "
                         f"batch of volumes / clips {L.shape_text(layout, ndim=5)}; got shape {x.shape}.{hint}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(
            f"images must be floating point (got {x.dtype}): convert them the way the model was trained, "
            f"e.g. images.astype(np.float32) / 255 followed by the model's mean/std normalisation")
    rank = rank or (None if spatial is None else len(spatial) + 2)
    if rank is not None and rank != x.ndim:
        what = "images" if rank == 4 else "volumes / clips"
        hint = " Add a batch dimension: images[None]." if x.ndim + 1 == rank else ""
        raise InputError(f"the model takes a rank-{rank} batch {L.shape_text(layout, ndim=rank)} of {what}; got "
                         f"shape {x.shape} (rank {x.ndim}).{hint}")
    other = L.NHWC if layout == L.NCHW else L.NCHW
    if channels is not None and L.channels(x.shape, layout) != channels:
        if L.channels(x.shape, other) == channels:
            got = "channels-last (NHWC)" if other == L.NHWC else "channels-first (NCHW)"
            raise InputError(
                f"images look {got} (shape {x.shape}) but the model takes {layout} {shape_txt} with "
                f"{channels} channels; convert with {L.transpose_fix(layout, x.ndim)}")
        raise InputError(f"the model expects {channels} channels in {layout} layout {shape_txt}; got shape {x.shape}")
    if spatial is not None:
        hw = L.spatial_size(x.shape, layout)
        if len(spatial) != len(hw) or any(s is not None and s != g for s, g in zip(spatial, hw)):
            what = "(D, H, W)" if len(spatial) == 3 else "(H, W)"
            raise InputError(f"the model expects inputs of size {tuple(spatial)} {what}; got {hw}. Resize them first")
    if x.shape[0] == 0:
        raise InputError("images is an empty batch (N = 0)")
    if 0 in x.shape[1:]:
        raise InputError(f"images have a zero-size dimension (shape {x.shape}); every image needs height, width and "
                         "channels of at least 1")
    finite = np.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        raise NonFiniteError(f"images contain {bad} NaN or Inf values; clean the input (e.g. np.nan_to_num) "
                             "before explaining", where="input")
    return np.ascontiguousarray(x, dtype=np.float32)


class Adapter(ABC):
    """Framework adapter. Subclasses fill the attributes and implement the abstract methods."""

    framework: ClassVar[str] = ""
    supports: ClassVar[Needs] = (Needs.ACTIVATIONS | Needs.FORWARD | Needs.TAIL | Needs.LAYER_GRADIENTS | Needs.ATTENTION
                                 | Needs.ATTENTION_GRADIENTS | Needs.BLOCK_GRADIENTS)
    layout: str = "NCHW"            # layout of the model input
    activation_layout: str = "NCHW"  # layout of the target layer's activation
    layer_layout = L.LayerLayout(L.NCHW)  # layout of the tensor the tail graph starts from (native_name)
    layer_name: str | None = None    # None: no target layer (layer-free methods only)
    output_name: str = OUTPUT
    activation_name: str | None = ACTIVATION
    max_engines: ClassVar[int] = 4  # exported graphs + sessions kept, one per input shape (least recently used dropped)
    gradient_hint: str = ""          # why gradients are unavailable, and the fix ("" when they are)
    higher_hint: str = ""            # why Hessian-vector / bias gradients are unavailable ("" when unknown)
    _no_layer: str = ""              # why there is no target layer ("" when there is one or none was sought)

    @property
    def native_name(self) -> str:
        """The layer's own tensor in the exported graph (where the tail starts); ACTIVATION is
        either that tensor or its channel-first view computed inside the graph."""
        return self.activation_name

    @property
    def native_layout(self) -> L.LayerLayout | None:
        """Layout of the tensor at ``native_name`` (None: a user reshape, layout unknown)."""
        return L.LayerLayout(self.activation_layout) if self.native_name == self.activation_name else self.layer_layout

    @property
    def original_outputs(self) -> list[str]:
        """The model's own outputs in the exported graph (an embedded explanation keeps them unchanged)."""
        return [self.output_name]

    _reshape_shapes: tuple | None = None  # (layer shape, (N, C, h, w)) of a user's reshape= on one batch

    @property
    def native_channel_axis(self) -> int | None:
        """The channel axis of the tensor at ``native_name`` (None: unknown), for ablating a channel;
        read through a user's reshape=, the axis whose size is C (see :func:`layout.reshape_channel_axis`)."""
        lay = self.native_layout
        return L.reshape_channel_axis(*(self._reshape_shapes or ((), ()))) if lay is None else lay.channel_axis

    def __init__(self, providers=None, batch_size: int | None = None):
        self.providers = providers
        self.batch_size = positive_int("batch_size", batch_size, optional=True)
        self._engines: OrderedDict[tuple, tuple[object, OnnxEngine]] = OrderedDict()
        self._lock = threading.RLock()  # guards the caches of this adapter (engines, compiled functions)

    # -- layer -------------------------------------------------------------------------------
    def require_layer(self, method: str = "", sample_shape: tuple[int, ...] | None = None) -> None:
        """Raise a clear error when a method needs a target layer and this adapter has none
        (``sample_shape``: one image's shape, for adapters that pick a layer lazily)."""
        if self.layer_name is None:
            who = f"method {method!r}" if method else "this method"
            why = f" ({self._no_layer})" if self._no_layer else ""
            raise ModelError(f"{who} works on a layer's activations, but this explainer has no target layer{why}. "
                             "Pass target_layer= (a layer name or object; see Explainer.layers()), or use a "
                             "layer-free method: 'occlusion', 'rise', 'kernelshap', 'lime'")

    # -- input -------------------------------------------------------------------------------
    @property
    def channels(self) -> int | None:
        return None

    @property
    def spatial(self) -> tuple | None:
        return None

    @property
    def sample_shape(self) -> tuple | None:
        """One input's shape when the adapter knows it (a fixed graph input, ``input_shape=``), else None."""
        c, hw = self.channels, self.spatial
        if c is None or hw is None or None in hw:
            return None
        return (c, *hw) if self.layout == "NCHW" else (*hw, c)

    @property
    def input_rank(self) -> int | None:  # 4 (images) or 5 (volumes / clips) where known
        return None if self.spatial is None else len(self.spatial) + 2

    def prepare(self, images: Any) -> np.ndarray:
        return check_images(images, self.layout, self.channels, self.spatial, self.input_rank)

    # -- ONNX --------------------------------------------------------------------------------
    @abstractmethod
    def export_onnx(self, sample_shape: tuple[int, ...]):
        """ONNX ModelProto for inputs of per-sample ``sample_shape``, with graph outputs
        ``[self.output_name, self.activation_name]``."""

    def weights_version(self) -> object:
        """A cheap fingerprint that changes when the model's weights change (None: never)."""
        return None

    def engine(self, sample_shape: tuple[int, ...]) -> OnnxEngine:
        """The ONNX Runtime engine for inputs of per-sample shape ``sample_shape``.

        Exported once per input shape and cached (the :attr:`max_engines` most recently used
        shapes); exported again if the model's weights have changed since (e.g. the user trained
        it further, or edited ``.data`` in place), so results are never stale. Thread-safe: two
        threads asking for the same shape share one export.
        """
        key = tuple(sample_shape)
        version = self.weights_version()
        with self._lock:
            cached = self._engines.get(key)
            if cached is None or cached[0] != version:
                with EXPORT_LOCK:  # exporters keep process-wide state
                    self._engines[key] = (version, self._make_engine(key))
            self._engines.move_to_end(key)
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)
            return self._engines[key][1]

    def _make_engine(self, sample_shape: tuple[int, ...]):
        """A new engine for ``sample_shape`` (an adapter may fall back to another forward path)."""
        return OnnxEngine(self.export_onnx(sample_shape), self.providers, self.batch_size)

    # -- gradients ---------------------------------------------------------------------------
    @abstractmethod
    def layer_gradients(self, x: np.ndarray, target: TargetSpec) -> Gradients:
        """Outputs, target scores, activations and d(score)/d(activation) at the target layer."""

    def input_gradients(self, x: np.ndarray, target: TargetSpec, rule: str = "vanilla") -> Gradients:
        """Outputs, target scores and d(score)/d(input) under backward ``rule``."""
        raise BackendError(f"input gradients are not available for {self.framework} models yet")

    def higher_derivatives(self, x: np.ndarray, target: TargetSpec, hvp: bool = False, bias: bool = False):
        """Derivatives beyond one gradient, for methods that need ``Needs.HVP`` / ``Needs.BIAS_GRADIENTS``.

        Returns an object with outputs (N, K), scores (N,), classes; with ``hvp``: activations,
        grads and hvp = d/dA <dS/dA, A> (N, C, h, w) channel-first at the target layer; with
        ``bias``: input_grads (N, *input) and bias_terms [(bias (C,), d(score)/d(output) (N, C, h, w))]
        for every convolution / batch-norm layer with a bias. Adapters that cannot provide them
        leave ``Needs.HVP`` / ``Needs.BIAS_GRADIENTS`` out of ``supports``.
        """
        raise BackendError(f"second-order and bias gradients are not available for {self.framework} models; "
                           "explain the model with from_torch, or its ONNX export with from_onnx")

    def vjp(self, x: np.ndarray, layer, cotangent, rule: str = "vanilla") -> tuple[np.ndarray, np.ndarray]:
        """One forward pass of x (N, ...) in the model's input layout, then one backward pass.

        layer: None -> the explained output (N, K) (post ``output=`` handling, e.g. logits);
               else a layer name (any layer of the model, same naming as target_layer) or layer object.
        cotangent: callable(A: np.ndarray) -> np.ndarray of A's shape, computed in NumPy from the
               forward value A of ``layer`` (channel-first (N, C, h, w) for rank-4 layers whatever the
               framework's layout; (N, K) for the output).
        rule: how gradients pass through every ReLU in the model (including ReLUs fused into layers):
              'vanilla' (true gradient), 'guided' (Springenberg et al.: positive gradients where the
              forward input was positive), 'deconv' (Zeiler & Fergus: positive gradients regardless
              of the forward input). The user's model is left unchanged.
        Returns (A channel-first float32, d<A, cot>/dx float32 in the input's layout).
        """
        raise BackendError(f"vjp is not available for {self.framework} models yet")

    def activations(self, x: np.ndarray, layers: list) -> list[np.ndarray]:
        """Forward only: the value of each of ``layers`` (names or layer objects), channel-first."""
        raise BackendError(f"activations of arbitrary layers are not available for {self.framework} models yet")

    def layers(self) -> list:
        """Candidate target layers (see ``Explainer.layers``)."""
        raise BackendError(f"listing layers is not available for {self.framework} models")

    def describe_lines(self) -> list[str]:
        """Extra lines for ``Explainer.describe`` (e.g. an ONNX graph's precision)."""
        return []

    def layer_names(self) -> list[str]:
        """Every named layer the user may pass as a layer."""
        raise BackendError(f"listing layer names is not available for {self.framework} models yet")

    def activation_census(self, sample_shape: tuple[int, ...] | None = None):
        """The model's activations as a :class:`~agnostic_cam.core.relu_policy.Census` (ReLU-family vs
        others), for the backward-rule policy; None when unknown. ``sample_shape``: one input's shape,
        for adapters that must run the model to see its activations."""
        return None

    def conv_weights(self, layer) -> np.ndarray:
        """A convolution's kernel as (O, I, kh, kw) float32."""
        raise BackendError(f"convolution weights are not available for {self.framework} models yet")

    def unsupported(self, name: str, missing: Needs, methods: list[str]) -> str:
        """Why method ``name`` cannot run here (it needs ``missing``), naming the way out and ``methods`` that can."""
        if missing & (Needs.HVP | Needs.BIAS_GRADIENTS) and self.supports & Needs.LAYER_GRADIENTS:
            what = "Hessian-vector products" if missing & Needs.HVP else "the gradients of every layer's bias"
            why = self.higher_hint or (
                f"the {self.framework} adapter does not compute them (PyTorch and Keras autograd do: explain the "
                "model with from_torch / from_keras, or its ONNX export with from_onnx and the onnx-grad extra)")
            return f"method {name!r} needs {what}, which this model cannot give: {why}; methods available here: " \
                   f"{', '.join(methods)}"
        if missing & (Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS | Needs.HVP | Needs.BIAS_GRADIENTS
                      | Needs.ATTENTION_GRADIENTS | Needs.BLOCK_GRADIENTS):
            hint = self.gradient_hint
            return (f"method {name!r} needs gradients, which this {self.framework} backend cannot compute"
                    f"{'; ' + hint if hint else ''}; methods available here: {', '.join(methods)}")
        return f"method {name!r} is not available for this backend; available: {', '.join(methods)}"
