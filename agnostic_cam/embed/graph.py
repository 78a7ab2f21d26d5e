"""A small ONNX node builder for the explanation branch: unique names, constants, and the ops whose
form changed between opsets (Reduce* axes as attribute before opset 18, as input from 18)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MIN_OPSET = 13  # Unsqueeze/Squeeze/ReduceSum axes as inputs, Resize with optional roi/scales, Einsum
AXES_INPUT_FROM = {"ReduceSum": 13}  # the other Reduce* ops take axes as an input from opset 18


class Branch:
    """Nodes and initializers appended to a graph; every tensor name starts with ``prefix``."""

    def __init__(self, opset: int, prefix: str = "xai/"):
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def const(self, value, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64), "ints")

    def f32(self, value) -> str:
        return self.const(np.asarray(value, dtype=np.float32), "f32")

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def reduce(self, op_type: str, x: str, axes, keepdims: int = 1) -> str:
        if self.opset >= AXES_INPUT_FROM.get(op_type, 18):
            return self.op(op_type, [x, self.ints(axes)], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x: str, axes) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes)])

    def squeeze(self, x: str, axes) -> str:
        return self.op("Squeeze", [x, self.ints(axes)])

    def shape(self, x: str, start: int = 0, end: int | None = None) -> str:
        """int64 dims ``start:end`` of ``x``'s shape."""
        s = self.op("Shape", [x])
        if start == 0 and end is None:
            return s
        return self.op("Slice", [s, self.ints([start]), self.ints([end if end is not None else 2**62])])

    def concat(self, parts: list[str]) -> str:
        return self.op("Concat", parts, axis=0)

    def flatten_batch(self, x: str, lead: int) -> str:
        """(A, B, rest...) -> (A*B, rest...) where ``lead`` = 2 leading axes merged."""
        return self.op("Reshape", [x, self.concat([self.ints([-1]), self.shape(x, lead)])])

    def repeat_rows(self, x: str, times: int) -> str:
        """(N, rest...) -> (N*times, rest...): each row repeated ``times`` times, consecutively."""
        u = self.unsqueeze(x, [1])
        target = self.concat([self.shape(x, 0, 1), self.ints([times]), self.shape(x, 1)])
        return self.flatten_batch(self.op("Expand", [u, target]), 2)

    def pick_class(self, y3: str, cls: str) -> str:
        """(N, M, K) and classes (N,) int64 -> (N, M): y3[n, m, cls[n]]."""
        idx = self.unsqueeze(cls, [1, 2])
        idx = self.op("Expand", [idx, self.concat([self.shape(y3, 0, 2), self.ints([1])])])
        return self.squeeze(self.op("GatherElements", [y3, idx], axis=2), [2])
