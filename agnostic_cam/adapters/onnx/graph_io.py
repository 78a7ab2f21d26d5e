"""The graph's image input and explained output for :class:`~agnostic_cam.adapters.onnx.adapter.OnnxAdapter`:
which input takes the images, its declared shape and type, which output is explained, and the final
Softmax in front of it (``output='logits'``). Reads ``self.model``, ``self.input_name`` and
``self.output_name`` of the adapter.
"""
from __future__ import annotations

import onnx

from agnostic_cam.engine import graph as G
from agnostic_cam.errors import InputError, ModelError

_SOFTMAX_OPS = ("Softmax", "LogSoftmax")


class OnnxGraphIO:
    def _check_opset(self) -> None:
        ops = [o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")]
        if ops and ops[0] < 11:
            raise ModelError(f"this ONNX model uses opset {ops[0]}; opset 11 or newer is supported. Upgrade it with "
                             "onnx.version_converter.convert_version(model, 13)")

    def _graph_inputs(self) -> list[onnx.ValueInfoProto]:
        inits = {i.name for i in self.model.graph.initializer}
        return [i for i in self.model.graph.input if i.name not in inits]

    def _resolve_input(self, name: str | None) -> str:
        inputs = [i.name for i in self._graph_inputs()]
        if name is None:
            if len(inputs) != 1:
                raise InputError(f"the model has {len(inputs)} inputs {inputs}; say which takes the images with input_name=")
            return inputs[0]
        if name not in inputs:
            raise InputError(f"the model has no input named {name!r}; its inputs are {inputs}")
        others = [i for i in inputs if i != name]
        if others:
            raise ModelError(f"the model has other input(s) {others} besides {name!r}; explain() feeds only the image "
                             "batch and cannot fill them. Export the model with the image as its only input (make "
                             "the others constants or initializers, e.g. with onnx.helper) and explain that")
        return name

    def _declared_input_shape(self) -> tuple:
        vi = next(i for i in self._graph_inputs() if i.name == self.input_name)
        shape = G.tensor_shape(vi)
        if shape is None or len(shape) not in (4, 5):
            raise ModelError(f"input {self.input_name!r} has shape {shape}; an image classifier takes a rank-4 batch "
                             "(N, C, H, W) or (N, H, W, C), a volume / clip classifier (N, C, D, H, W) or (N, D, H, W, C)")
        if vi.type.tensor_type.elem_type not in G.FLOAT_TYPES:
            raise ModelError(f"input {self.input_name!r} has element type "
                             f"{onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)}; image inputs must be "
                             "float32, float16 or float64 (quantized graphs take float images and quantize inside)")
        return shape

    def _resolve_output(self, output: str | None) -> tuple[str, str]:
        names = [o.name for o in self.model.graph.output]
        if output is None or output == "raw":
            return names[0], "raw"
        if not isinstance(output, str):
            raise InputError(f"output must be None, 'raw', 'logits' or the name of a graph output; got {type(output).__name__}")
        if output in names:  # a graph output's name wins over the 'logits' keyword
            return output, "raw"
        if output == "logits" or output.startswith("logits:"):
            base = output.partition(":")[2] or names[0]
            if base not in names:
                raise InputError(f"the model has no output named {base!r}; its outputs are {names}")
            return self._before_softmax(base), "logits"
        if output not in names:
            raise InputError(f"the model has no output named {output!r}; its outputs are {names} "
                             "(or use 'logits' to explain the input of a final Softmax)")
        return output, "raw"

    def _softmax_node(self, out: str):
        """The Softmax/LogSoftmax node that (through Identity/Reshape/Flatten/Squeeze) produces ``out``,
        and the op that does produce it (None for a graph input)."""
        producer = {o: n for n in self.model.graph.node for o in n.output if o}
        t = out
        while t in producer and producer[t].op_type in ("Identity", "Reshape", "Flatten", "Squeeze"):
            t = producer[t].input[0]
        node = producer.get(t)
        return (node if node is not None and node.op_type in _SOFTMAX_OPS else None), node

    def final_softmax(self) -> str | None:
        """'Softmax' or 'LogSoftmax' when the explained output comes out of one, else None."""
        node, _ = self._softmax_node(self.output_name)
        return node.op_type if node is not None else None

    def _before_softmax(self, out: str) -> str:
        """The tensor entering the Softmax that (through Identity/Reshape/Flatten) produces ``out``."""
        node, producer = self._softmax_node(out)
        if node is None:
            what = producer.op_type if producer is not None else "a graph input"
            raise ModelError(f"output='logits' needs output {out!r} to be produced by a Softmax; it comes from {what}. "
                             "If the model already returns logits, use output=None")
        return node.input[0]
