"""Feature-visualisation primitives of the ONNX adapter (a mixin of
:class:`~agnostic_cam.adapters.onnx.adapter.OnnxAdapter`): layer names, activations of any candidate layer
on ONNX Runtime, convolution kernels read from the graph, the activation census the backward-rule
policy reads, and ``vjp`` through the gradient backend.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.adapters.base import closest_names
from agnostic_cam.adapters.onnx.layers import Layer
from agnostic_cam.adapters.onnx.twin import float_twin
from agnostic_cam.engine import graph as G
from agnostic_cam.errors import BackendError, InputError, ModelError

_AFTER_CONV = ("Relu", "BatchNormalization", "Identity")  # conv_weights follows these back to a Conv


class OnnxFeaturePrimitives:
    """Needs from the adapter: ``model``, ``candidates``, ``engine``, ``input_name``, ``output_name``,
    ``precision``, ``_lock``, ``_act_engines`` and ``_backend()``."""

    def layer_names(self) -> list[str]:
        """The candidate layer tensor names (what :meth:`layers` lists), in graph order."""
        return [ly.name for ly in self.candidates]

    def _find(self, layer) -> Layer:
        """A candidate layer by tensor name or producing node name (as ``target_layer`` takes them)."""
        if isinstance(layer, Layer):
            return layer
        if not isinstance(layer, str):
            raise InputError(f"an ONNX layer is a tensor or node name (str); got {type(layer).__name__}")
        for ly in self.candidates:
            if layer in (ly.name, ly.node):
                return ly
        names = self.layer_names()
        if layer in G.produced_tensors(self.model) or any(n.name == layer for n in self.model.graph.node):
            raise ModelError(f"tensor {layer!r} is not a spatial (N, C, h, w) feature map of the image the output "
                             f"depends on; closest layer names: {closest_names(layer, names)}")
        raise InputError(f"the ONNX graph has no tensor or node named {layer!r}; closest layer names: "
                         f"{closest_names(layer, names)}")

    def activations(self, x: np.ndarray, layers: list) -> list[np.ndarray]:
        """Forward only, on ONNX Runtime: each layer's value (N, C, h, w) float32 whatever its layout.

        One engine per set of requested tensors (the graph with them as extra outputs), cached.
        """
        found = [self._find(ly) for ly in layers]
        names = tuple(dict.fromkeys(ly.name for ly in found))
        with self._lock:
            eng = self._act_engines.get(names)
            if eng is None:
                eng = self._act_engines[names] = self.engine(()).with_outputs(list(names))
        values = dict(zip(names, eng.run({self.input_name: np.asarray(x, np.float32)}, list(names))))
        return [np.ascontiguousarray(ly.to_chw(values[ly.name]), dtype=np.float32) for ly in found]

    def activation_census(self, sample_shape: tuple[int, ...] | None = None):
        """The graph's activation nodes (see :mod:`agnostic_cam.adapters.onnx.census`)."""
        if getattr(self, "_census", None) is None:
            from agnostic_cam.adapters.onnx.census import census

            graph = self.model
            if self.precision != "float32":  # rules apply to the twin's ReLUs (QDQ graphs fold theirs into ranges)
                try:
                    graph = float_twin(self.model)
                except BackendError:
                    pass
            self._census = census(graph, self.output_name)
        return self._census

    def conv_weights(self, layer) -> np.ndarray:
        """The kernel (O, I/groups, kh, kw) float32 of the Conv producing tensor (or node) ``layer``.

        A Relu / BatchNormalization / Identity output that follows a Conv directly (e.g. Conv ->
        BatchNormalization -> Relu) is followed back to that Conv: its kernel is returned, unfused.
        The kernel is read from an initializer or a ``Constant`` node.
        """
        if not isinstance(layer, str):
            raise InputError(f"an ONNX layer is a tensor or node name (str); got {type(layer).__name__}")
        nodes = list(self.model.graph.node)
        producer = {o: n for n in nodes for o in n.output if o}
        node = next((n for n in nodes if n.name and n.name == layer), None) or producer.get(layer)
        convs = [n.output[0] for n in nodes if n.op_type == "Conv"]
        if node is None:
            raise InputError(f"the ONNX graph has no tensor or node named {layer!r}; closest convolution outputs: "
                             f"{closest_names(layer, convs)}")
        start = node
        while node is not None and node.op_type in _AFTER_CONV:
            node = producer.get(node.input[0])
        if node is None or node.op_type != "Conv":
            what = start.op_type if node is None else f"{start.op_type} (after {node.op_type})"
            raise ModelError(f"{layer!r} is produced by {what}, not by a convolution (Conv, possibly followed by "
                             f"BatchNormalization/Relu); closest convolution outputs: {closest_names(layer, convs)}")
        w = self._constant(node.input[1], producer)
        if w is None or w.ndim != 4:
            raise ModelError(f"the kernel {node.input[1]!r} of Conv {node.name or node.output[0]!r} is not a constant "
                             "rank-4 (O, I, kh, kw) tensor (computed at run time, or not 2-D)")
        return np.array(w, dtype=np.float32)

    def _constant(self, name: str, producer: dict) -> np.ndarray | None:
        """The value of an initializer or a ``Constant`` node's output (through Identity), else None."""
        from onnx import numpy_helper

        for _ in range(8):
            init = next((i for i in self.model.graph.initializer if i.name == name), None)
            if init is not None:
                return numpy_helper.to_array(init)
            n = producer.get(name)
            if n is None:
                return None
            if n.op_type == "Constant":
                a = next((a for a in n.attribute if a.name == "value"), None)
                return None if a is None else numpy_helper.to_array(a.t)
            if n.op_type != "Identity":
                return None
            name = n.input[0]
        return None

    def vjp(self, x: np.ndarray, layer, cotangent, rule: str = "vanilla") -> tuple[np.ndarray, np.ndarray]:
        """Forward ``x`` then d<A, cotangent(A)>/dx through the gradient backend (see ``Adapter.vjp``).

        layer: None (the explained output (N, K)) or a candidate tensor / node name; A is returned
        channel-first whatever the tensor's layout, the gradient in the input's layout.
        """
        backend = self._backend()
        if layer is None:
            return backend.vjp(x, None, cotangent, rule)
        ly = self._find(layer)

        def native_cot(a: np.ndarray) -> np.ndarray:
            cot = np.asarray(cotangent(ly.to_chw(a)), dtype=np.float32)
            want = ly.to_chw(a).shape
            if cot.shape != want:
                raise InputError(f"the cotangent must have the layer value's shape {want}; got {cot.shape}")
            return ly.from_chw(cot)

        a, gx = backend.vjp(x, ly.name, native_cot, rule)
        return np.ascontiguousarray(ly.to_chw(a), dtype=np.float32), gx
