"""The global-average-pool + linear head after a layer, read off the ONNX graph (CAM, Grad-CAM).

From the layer's tensor the path must be: optional Transpose, a global average pool
(``GlobalAveragePool`` or ``ReduceMean`` over the spatial axes), optional Flatten / Reshape / Squeeze
/ Identity, then ``Gemm`` or ``MatMul`` (+ ``Add`` bias) with constant weights, ending at the
explained output. Then f(A) = W mean_hw(A) + b, and W (K, C) is the whole of CAM: the map for class k
is sum_c W[k, c] A_c, and Grad-CAM's weights are W[k] / (h*w).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from agnostic_cam.errors import ModelError

PASS = ("Flatten", "Reshape", "Squeeze", "Identity", "Dropout", "Cast")
EMBEDDABLE_ANY_HEAD = ("activation_map", "eigencam", "reciprocam", "vit_reciprocam")


def _refuse(method: str, why: str) -> ModelError:
    return ModelError(
        f"method {method!r} can be embedded for a global-average-pool + linear head right after the target layer "
        f"(GlobalAveragePool or ReduceMean, then Gemm / MatMul with constant weights, ending at the explained "
        f"output); {why}. Embeddable on any head: {', '.join(EMBEDDABLE_ANY_HEAD)}")


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def linear_head(model: onnx.ModelProto, start: str, output: str, spatial: tuple[int, int], method: str) -> np.ndarray:
    """W (K, C) float32 of the GAP + linear head that maps tensor ``start`` (spatial axes ``spatial``)
    to ``output``; a ModelError naming what can be embedded otherwise."""
    consts = _constants(model)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in set(n.input):
            readers.setdefault(i, []).append(n)
    axes, t, pooled, W = set(spatial), start, False, None
    for _ in range(16):
        if t == output and W is not None:
            return W.astype(np.float32)
        nodes = [n for n in readers.get(t, []) if n.op_type != "Shape"]
        if len(nodes) != 1:
            raise _refuse(method, f"tensor {t!r} is read by {len(nodes)} nodes where one was expected")
        n = nodes[0]
        if n.op_type == "Transpose" and not pooled:
            perm = list(_attr(n, "perm", []))
            axes = {perm.index(a) for a in axes}
        elif n.op_type == "GlobalAveragePool" and not pooled and axes == {2, 3}:
            pooled = True
        elif n.op_type == "ReduceMean" and not pooled:
            red = _attr(n, "axes", None)
            if red is None and len(n.input) > 1:
                red = consts.get(n.input[1])
            if red is None or {int(a) % 4 for a in np.ravel(red)} != axes:
                raise _refuse(method, f"ReduceMean {n.name!r} does not average the spatial axes")
            pooled = True
        elif n.op_type in PASS and pooled and W is None:
            pass
        elif n.op_type == "Gemm" and pooled and W is None and n.input[1] in consts:
            B = consts[n.input[1]].astype(np.float64) * _attr(n, "alpha", 1.0)
            W = B if _attr(n, "transB", 0) else B.T
            if _attr(n, "transA", 0):
                raise _refuse(method, "the Gemm transposes its input")
        elif n.op_type == "MatMul" and pooled and W is None and n.input[1] in consts:
            W = consts[n.input[1]].astype(np.float64).T
        elif n.op_type == "Add" and W is not None and any(i in consts for i in n.input):
            pass
        elif n.op_type in ("Identity", "Cast") and W is not None:  # Cast: an fp16 graph's float32 output
            pass
        else:
            where = "after the pooling" if pooled else "between the layer and a global average pool"
            raise _refuse(method, f"found {n.op_type} {n.name!r} {where}")
        t = n.output[0]
    raise _refuse(method, "the head is longer than a pooling and one linear layer")
