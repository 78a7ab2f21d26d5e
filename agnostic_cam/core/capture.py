"""The typed capture a method receives, and the one place it is built.

The pipeline (:mod:`agnostic_cam.core.run`) reads: validate -> ``capturer(x, target, needs)`` ->
``method.compute`` -> :class:`~agnostic_cam.core.explanation.Explanation`. A method declares what it
:class:`Needs`; the :class:`Capturer` (one per explainer, over its adapter's primitives) gathers exactly that into a :class:`Capture`: NumPy arrays
plus callables that run on ONNX Runtime or the framework's autograd. Layer-free methods (occlusion,
RISE, KernelSHAP, LIME) need only ``FORWARD``: no target layer is asked for, so they run on models
without one. Neutral module: imports no framework, no adapter and no method.
"""
from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.targets import TargetSpec, for_rows, select_scores
from agnostic_cam.core.attention import AttentionCapture, gather
from agnostic_cam.core.batching import batched_gradients, gradient_batch
from agnostic_cam.core.block_tail import BlockTails
from agnostic_cam.core.checks import checked_capture, verify_tail
from agnostic_cam.errors import ModelError


class Needs(enum.Flag):
    """What a method needs from the adapter / engine."""

    ACTIVATIONS = enum.auto()       # layer activations (from the ONNX session)
    FORWARD = enum.auto()           # model outputs for new inputs (ONNX session)
    TAIL = enum.auto()              # model outputs for new layer activations (ONNX tail graph)
    LAYER_GRADIENTS = enum.auto()   # activations and d(score)/d(activations) (framework autograd)
    INPUT_GRADIENTS = enum.auto()   # d(score)/d(input) under a backward rule (framework autograd)
    HVP = enum.auto()               # activations, grads and the Hessian-vector product H A at the layer
    BIAS_GRADIENTS = enum.auto()    # every bias layer's bias and d(score)/d(its output), plus input grads
    ATTENTION = enum.auto()         # every block's attention probabilities (N, heads, T, T), one ONNX Runtime pass
    ATTENTION_GRADIENTS = enum.auto()  # also d(score)/d(attention) for each (gradient backend on the ONNX graph)
    BLOCK_GRADIENTS = enum.auto()   # d(s_l)/d(attention_l), s_l: the score read from block l's tokens (LeGrad)

    @property
    def uses_gradients(self) -> bool:
        return bool(self & (Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS | Needs.HVP | Needs.BIAS_GRADIENTS
                            | Needs.ATTENTION_GRADIENTS | Needs.BLOCK_GRADIENTS))

    @property
    def uses_attention(self) -> bool:
        return bool(self & (Needs.ATTENTION | Needs.ATTENTION_GRADIENTS | Needs.BLOCK_GRADIENTS))

    @property
    def uses_layer(self) -> bool:
        """Whether a target layer is needed (layer-free methods need none)."""
        return bool(self & (Needs.ACTIVATIONS | Needs.TAIL | Needs.LAYER_GRADIENTS | Needs.HVP))


channels_first = L.to_chw  # (N, ...) in a layout -> channel-first (N, C, h, w)


@dataclass
class Capture:
    """Everything a method may use, as NumPy arrays. Shapes:

    x (N, *input) in the model's layout; outputs: the explained output (N, K) for classifiers, any
    (N, ...) array for other tasks (targets then map it to scores); scores (N,);
    activations and grads (N, C, h, w) channel-first whatever the framework's layout (None when the
    method does not need them); input_grads (N, *input) d(score)/d(input) under the method's rule;
    hvp and bias_terms for ``Needs.HVP`` / ``Needs.BIAS_GRADIENTS`` (ShapleyCAM, FullGrad).
    ``forward(inputs)``: outputs for new input rows (M, *input) on ONNX Runtime, in batches.
    ``native``: the layer's own tensor (channel-first, channels-last or tokens (N, T, C)), what
    ``tail(native, image)`` takes: outputs for new layer tensors (M, ...) of images ``image`` (M,);
    ``channel_axis``: its channel axis (None: unknown); ``native_from_chw``: (M, C, h, w) -> native
    (raises where that cannot be done, e.g. prefix tokens).
    ``input_grad(inputs, image, rule)``: d(score)/d(input) (M, *input) for input rows (M, *input),
    row i scored for the target of image ``image[i]`` ((M,) ints; None: row i is image i).
    """

    x: np.ndarray
    layout: str
    outputs: np.ndarray
    scores: np.ndarray
    classes: np.ndarray | None
    target_fn: Callable | None
    activations: np.ndarray | None = None
    grads: np.ndarray | None = None
    forward: Callable[[np.ndarray], np.ndarray] | None = None
    tail: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    input_grad: Callable[[np.ndarray, np.ndarray | None, str], np.ndarray] | None = None
    batch_size: int = 32
    progress: bool | None = None
    input_grads: np.ndarray | None = None
    hvp: np.ndarray | None = None   # (N, C, h, w) Hessian-vector product d/dA <dS/dA, A>
    bias_terms: list = field(default_factory=list)  # [(bias (C,), d(score)/d(layer output) (N, C, h, w))]
    native: np.ndarray | None = None
    channel_axis: int | None = 1
    native_from_chw: Callable[[np.ndarray], np.ndarray] | None = None
    attention: AttentionCapture | None = None  # for Needs.ATTENTION* (see agnostic_cam.core.attention)
    block: Callable[[], Any] | None = None  # Needs.TAIL: the pre-norm block at the layer (core.block_tail)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """The position axes of ``activations``: (2, 3) for (N, C, h, w), (2, 3, 4) for volumes."""
        return tuple(range(2, 5 if self.activations is not None and self.activations.ndim == 5 else 4))

    def __post_init__(self):
        # a capture built by hand holds channel-first activations only: the layer's own tensor is them
        if self.native_from_chw is None:
            self.native_from_chw = _identity

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def input_size(self) -> tuple[int, ...]:
        """(H, W) of the input images; (D, H, W) of volumes and clips."""
        return L.spatial_size(self.x.shape, self.layout)

    def row_scores(self, outputs: np.ndarray, image: np.ndarray | int) -> np.ndarray:
        """Target scores (M,) of output rows (M, ...) that belong to images ``image`` (int or (M,))."""
        idx = np.broadcast_to(np.asarray(image), (outputs.shape[0],))
        classes = None if self.classes is None else self.classes[idx]
        return select_scores(outputs, classes, for_rows(self.target_fn, idx))

    def masked_inputs(self, image: int, masks: np.ndarray) -> np.ndarray:
        """Image ``image`` multiplied by each of ``masks`` (M, H, W) (volumes: (M, D, H, W)): (M, *input) in
        the model's layout."""
        xi = self.x[image][None]
        return xi * L.expand_mask(masks, self.layout)

    def blend(self, image: int, masks: np.ndarray, baseline: np.ndarray | float = 0.0) -> np.ndarray:
        """``x * m + baseline * (1 - m)`` for image ``image`` and masks (M, H, W), model layout.

        ``baseline``: a number or one image (*input) in the model's layout."""
        m = L.expand_mask(masks, self.layout)
        xi = self.x[image][None]
        return (xi * m + np.asarray(baseline, np.float32) * (1 - m)).astype(np.float32)

    def progress_bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=(None if self.progress is None else not self.progress))


class CaptureSource(Protocol):
    """What the :class:`Capturer` reads from an adapter (see :class:`~agnostic_cam.adapters.base.Adapter`)."""

    layout: str
    activation_layout: str
    layer_name: str | None
    output_name: str
    activation_name: str | None
    native_name: str | None          # the layer's own tensor, where the tail starts
    native_layout: L.LayerLayout | None
    native_channel_axis: int | None

    def engine(self, sample_shape: tuple[int, ...]): ...
    def layer_gradients(self, x: np.ndarray, target: TargetSpec): ...
    def input_gradients(self, x: np.ndarray, target: TargetSpec, rule: str = "vanilla"): ...
    def higher_derivatives(self, x: np.ndarray, target: TargetSpec, hvp: bool, bias: bool): ...
    def require_layer(self, method: str, sample_shape: tuple[int, ...]) -> None: ...


class Capturer:
    """Builds the :class:`Capture` for one adapter; caches the tail graph per engine."""

    def __init__(self, source: CaptureSource, attention=None):
        self.source = source
        self.attention = attention  # attention primitives (adapters.attention.AttentionSource), or None
        self._tails: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._tails_lock = threading.Lock()  # tail graphs are cut once, also when threads race for them
        self._blocks = BlockTails()

    def __call__(self, x: np.ndarray, spec: TargetSpec, needs: Needs, rule: str = "vanilla",
                 progress: bool | None = None, method: str = "", batch_size: int | None = None,
                 attention: Any = None, prefix: int | None = None) -> Capture:
        """Gather what ``needs`` asks for, for the validated batch ``x``; input gradients are taken
        under ReLU backward ``rule``. Gradient passes run ``batch_size`` images at a time (None: the
        adapter's batch size, else chosen from the input size; see :mod:`agnostic_cam.core.checks`), and
        every array of the capture is checked for NaN/Inf. Attention needs: ``attention`` picks the
        blocks (None: all), ``prefix`` the count of non-patch tokens (None: worked out)."""
        src = self.source
        if needs.uses_attention:
            if self.attention is None:
                raise ModelError(f"method {method!r} reads attention maps, which this explainer cannot give")
            *got, att = gather(self.attention, x, spec, bool(needs & Needs.ATTENTION_GRADIENTS),
                               bool(needs & Needs.BLOCK_GRADIENTS), attention, prefix)
            cap = Capture(x, src.layout, *got, spec.fn, progress=progress)
            cap.attention = att
            checked_capture(cap)
            return cap
        if needs.uses_layer:
            src.require_layer(method, x.shape[1:])
        higher = None
        if needs & (Needs.HVP | Needs.BIAS_GRADIENTS):
            higher = src.higher_derivatives(x, spec, hvp=bool(needs & Needs.HVP), bias=bool(needs & Needs.BIAS_GRADIENTS))
        gbs = gradient_batch(x, batch_size or getattr(src, "batch_size", None))
        grads = batched_gradients(src.layer_gradients, x, spec, gbs) if needs & Needs.LAYER_GRADIENTS else higher
        igrads = (batched_gradients(lambda xs, sp: src.input_gradients(xs, sp, rule), x, spec, gbs)
                  if needs & Needs.INPUT_GRADIENTS else higher)
        first = grads or igrads
        acts = None if grads is None else grads.activations
        engine = src.engine(x.shape[1:]) if needs & (Needs.ACTIVATIONS | Needs.FORWARD | Needs.TAIL) else None
        if first is not None:
            outputs, scores, classes = first.outputs, first.scores, first.classes
            if acts is None and needs & Needs.ACTIVATIONS:
                acts = channels_first(engine.run(x, [src.activation_name])[0], src.activation_layout)
        native = None
        own = needs & Needs.TAIL and src.native_name != src.activation_name  # tokens / reshape: tail starts there
        if first is None:
            names = [src.output_name] + ([src.activation_name] if needs & (Needs.ACTIVATIONS | Needs.TAIL) else [])
            vals = engine.run(x, names + ([src.native_name] if own else []), batch_size=batch_size)
            outputs = vals[0]
            classes = spec.indices(outputs)
            scores = select_scores(outputs, classes, spec.fn)
            if len(vals) > 1:
                acts = channels_first(vals[1], src.activation_layout)
                native = vals[2] if own else vals[1]
        elif needs & Needs.TAIL:
            native = engine.run(x, [src.native_name])[0]
        cap = Capture(x, src.layout, outputs, scores, classes, spec.fn, acts,
                      None if grads is None else grads.grads, progress=progress,
                      input_grads=None if igrads is None else igrads.input_grads)
        if higher is not None:
            cap.hvp, cap.bias_terms = higher.hvp, higher.bias_terms
        if needs & Needs.INPUT_GRADIENTS:
            cap.input_grad = self._input_grad(spec, cap)
        if needs & Needs.TAIL:
            cap.native, cap.channel_axis = native, src.native_channel_axis
            cap.native_from_chw = _native_from_chw(src.native_layout)
        if engine is not None:
            cap.forward = lambda inp, e=engine: e.run(inp, [src.output_name])[0]
            cap.batch_size = batch_size or engine.batch_size_for(x)
            if needs & Needs.TAIL:
                cap.tail = self._tail(engine, x, cap)
                cap.block = lambda e=engine: self._blocks(e, src, x, cap.outputs)
        checked_capture(cap)
        return cap

    def _input_grad(self, spec: TargetSpec, cap: Capture):
        """``cap.input_grad``: gradients of new input rows for the targets of the images they belong to."""
        src = self.source

        def input_grad(inputs: np.ndarray, image: np.ndarray | None = None, rule: str = "vanilla") -> np.ndarray:
            idx = np.arange(cap.n) if image is None else np.asarray(image, dtype=np.int64)
            sub = spec.subset(idx, cap.classes)
            return src.input_gradients(np.ascontiguousarray(inputs, dtype=np.float32), sub, rule).input_grads

        return input_grad

    def _tail(self, engine, x: np.ndarray, cap: Capture):
        """A callable (layer tensors (M, ...) in the layer's own layout, image index (M,)) -> outputs
        (M, K) on the tail graph (the part of the model after the layer's own tensor)."""
        src = self.source
        with self._tails_lock:
            if engine not in self._tails:
                tail_engine, extra = engine.tail(src.native_name, [src.output_name])
                # the head view that also outputs the tail's extra inputs: built (and its session
                # created) once per engine, not once per call
                self._tails[engine] = (tail_engine, extra, False, engine.with_outputs(extra) if extra else None)
            tail_engine, extra, verified, head = self._tails[engine]
        extra_vals = dict(zip(extra, head.run(x, extra))) if extra else {}

        def run(acts: np.ndarray, image: np.ndarray) -> np.ndarray:
            feeds = {src.native_name: np.asarray(acts, np.float32)}
            feeds.update({k: v[np.asarray(image)] for k, v in extra_vals.items()})
            return tail_engine.run(feeds, [src.output_name])[0]

        if not verified:
            verify_tail(run, cap, src.layer_name, tail_engine.reads(src.native_name, src.output_name))
            with self._tails_lock:
                self._tails[engine] = (tail_engine, extra, True, head)
        return run


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _native_from_chw(lay: L.LayerLayout | None):
    def convert(a: np.ndarray) -> np.ndarray:
        if lay is None:
            raise L.LayoutError("this layer is read through reshape=, which cannot be inverted; use a method that "
                                "does not rebuild the layer's tensor from (N, C, h, w), e.g. 'gradcam'")
        return lay.from_chw(np.asarray(a, np.float32))

    return convert


