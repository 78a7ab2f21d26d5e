"""Attention primitives of any adapter, read from its ONNX graph: :class:`AttentionSource` wraps
an adapter (the explainer builds one and hands it to its Capturer).

The exported graph (PyTorch, Keras) or the bare ONNX file holds each block's attention
probabilities as a plain tensor whatever kernel (eager, SDPA, fused) the framework ran, so one
implementation serves every framework: the maps come from one ONNX Runtime pass with those tensors
as extra outputs, their gradients from the onnx2torch conversion of the same graph
(:mod:`agnostic_cam.adapters.onnx.attention_grad`).
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

import numpy as np

from agnostic_cam.engine.attention import find_attention, open_softmaxes, patch_grids
from agnostic_cam.errors import AgnosticCamError, BackendError, MissingDependencyError, ModelError

_GRAD_EXTRA = "pip install 'agnostic-cam[onnx-grad]'"


class AttentionSource:
    """``attention_layers``, ``attention_maps``, ``attention_gradients`` and ``patch_grids`` over
    ``adapter.engine(sample_shape).model`` (what :func:`agnostic_cam.core.attention.gather` reads)."""

    def __init__(self, adapter):
        self.adapter = adapter
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per engine (input shape)
        self._lock = threading.Lock()
        self._pin = threading.local()  # (sample shape, (engine, entry)) while a capture is being built

    @property
    def layout(self) -> str:
        return self.adapter.layout

    @property
    def output_name(self) -> str:
        return self.adapter.output_name

    @contextlib.contextmanager
    def pinned(self, sample_shape: tuple[int, ...]):
        """Within the block, every lookup for ``sample_shape`` reuses one engine (the adapter checks
        the model's weights once, not once per primitive); per thread."""
        found = self._attention_engine(sample_shape)
        self._pin.value = (tuple(sample_shape), found)
        try:
            yield
        finally:
            self._pin.value = None

    def _attention_engine(self, sample_shape: tuple[int, ...] | None):
        pin = getattr(self._pin, "value", None)
        if pin is not None and sample_shape is not None and pin[0] == tuple(sample_shape):
            return pin[1]
        a = self.adapter
        shape = sample_shape or getattr(a, "input_shape", None) or getattr(a, "_last_shape", None)
        if shape is None:
            raise ModelError("finding the attention tensors needs the input size: pass input_shape=(C, H, W)")
        shape = tuple(shape)[1:] if sample_shape is None and len(tuple(shape)) == 4 else tuple(shape)  # batch dim off
        engine = a.engine(shape)
        model = getattr(engine, "model", None)
        if model is None or not hasattr(model, "graph"):
            raise BackendError("attention methods read the model's ONNX export, and this model could not be exported "
                               "(see the warning given when it was loaded); attention maps are unavailable for it")
        with self._lock:
            entry = self._cache.get(engine)
            if entry is None:
                shapes = {}
                unknown = open_softmaxes(model)
                if unknown and all(isinstance(d, int) and d > 0 for d in shape):  # shapes static inference leaves open: measured on one zero image
                    vals = engine.with_outputs(unknown).run(np.zeros((1, *shape), np.float32), unknown)
                    shapes = {k: tuple(v.shape) for k, v in zip(unknown, vals)}
                entry = {"layers": find_attention(model, shapes), "grids": patch_grids(model), "runs": {}}
                self._cache[engine] = entry
        return engine, entry

    def attention_layers(self, sample_shape: tuple[int, ...] | None = None) -> list:
        """Every block's attention probabilities (N, heads, T, T), in graph order (see
        :class:`~agnostic_cam.engine.attention.AttentionTensor`)."""
        return list(self._attention_engine(sample_shape)[1]["layers"])

    def available(self) -> bool:
        """Whether the model's graph holds attention maps at its known input size (False when the
        size is unknown or the graph cannot be read)."""
        try:
            return bool(self.attention_layers())
        except AgnosticCamError:
            return False

    def patch_grids(self, sample_shape: tuple[int, ...] | None = None) -> list[tuple[int, int]]:
        """(h, w) sizes of the graph's rank-4 tensors, which settle how tokens split into a grid."""
        return list(self._attention_engine(sample_shape)[1]["grids"])

    def attention_maps(self, x: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One ONNX Runtime pass: (outputs (N, K), [attention (N, heads, T, T) for each of ``names``])."""
        engine, entry = self._attention_engine(x.shape[1:])
        key = ("maps", tuple(names))
        with self._lock:
            if key not in entry["runs"]:
                entry["runs"][key] = engine.with_outputs(list(names))
        vals = entry["runs"][key].run(x, [self.output_name, *names])
        return vals[0], list(vals[1:])

    def attention_gradients(self, x: np.ndarray, target: Any, names: list[str], final: bool = True,
                            per_block: bool = False) -> dict:
        """Outputs, scores, classes, the maps of ``names``, d(score)/dA for each (``final``) and, with
        ``per_block``, d(s_l)/dA_l where s_l is the target read from block l's mean token through the
        model's head (LeGrad). Computed on the onnx2torch conversion of the ONNX graph."""
        engine, entry = self._attention_engine(x.shape[1:])
        key = ("grads", tuple(names), per_block, per_block and final)
        with self._lock:  # converted once, also when threads race for it
            if key not in entry["runs"]:
                entry["runs"][key] = self._backend(engine, entry, names, per_block, final)
        return entry["runs"][key](x, target, final)

    def _backend(self, engine, entry: dict, names: list[str], per_block: bool, final: bool):
        try:
            from agnostic_cam.adapters.onnx.attention_grad import AttentionGradients
        except ImportError as e:
            raise MissingDependencyError(f"gradients of attention maps need torch and onnx2torch ({e}): "
                                         f"{_GRAD_EXTRA}") from None
        blocks = last = None
        if per_block:
            layers = entry["layers"]
            chosen = [next(a for a in layers if a.name == n) for n in names]
            if any(a.output is None for a in layers + chosen):
                raise ModelError("this graph's attention blocks have no residual output the method can read "
                                 "(a block is attention, then an MLP, each added to the token stream)")
            blocks, last = [a.output for a in chosen], layers[-1].output
        return AttentionGradients(engine.model, self.output_name, list(names), blocks, last, final)
