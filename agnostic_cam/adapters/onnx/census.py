"""The activations of an ONNX graph, for the backward-rule policy (:mod:`agnostic_cam.core.relu_policy`).

ReLU-family nodes: ``Relu``, and ``Clip`` whose min is the constant 0 and whose max is a constant
> 0 or absent (PyTorch exports ReLU6 / Hardtanh(0, m) / clamp(0, m) that way). Other activations:
the element-wise non-linearities of :data:`OTHERS` (an exported GELU appears as ``Erf``, a SiLU as
``Sigmoid``), and a ``Clip`` with min < 0 < max (Hardtanh). A ``Clip`` with one other bound is a
clamp, not counted. The node producing the explained output is not counted (a sigmoid head).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from agnostic_cam.core.relu_policy import Census

OTHERS = {"Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "LeakyRelu", "PRelu", "Gelu",
          "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Erf", "Swish"}


def constants(graph: onnx.GraphProto, max_size: int | None = None) -> dict[str, np.ndarray]:
    """Values of initializers (of at most ``max_size`` elements, when given) and ``Constant`` nodes."""
    vals = {i.name: numpy_helper.to_array(i) for i in graph.initializer
            if max_size is None or int(np.prod(i.dims)) <= max_size}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            vals[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return vals


def _clip_bounds(node: onnx.NodeProto, consts: dict) -> tuple[float | None, float | None, bool]:
    """(min, max, known): None for an absent bound; known False when a bound is not a constant."""
    if len(node.input) <= 1 and node.attribute:  # opset < 11: attributes
        att = {a.name: a.f for a in node.attribute}
        return att.get("min"), att.get("max"), True
    out = []
    for i in (1, 2):
        name = node.input[i] if len(node.input) > i else ""
        if not name:
            out.append(None)
        elif name in consts and consts[name].size == 1:
            out.append(float(consts[name].reshape(())))
        else:
            return None, None, False
    return out[0], out[1], True


def census(model: onnx.ModelProto, output: str | None = None) -> Census:
    """ReLU-family vs other activation nodes of the main graph (``output``: the explained output)."""
    g = model.graph
    consts = constants(g)
    relus, others = [], []
    for n in g.node:
        if output is not None and output in n.output:
            continue
        if n.op_type == "Relu":
            relus.append("Relu")
        elif n.op_type == "Clip":
            lo, hi, known = _clip_bounds(n, consts)
            if known and lo == 0 and (hi is None or hi > 0):
                relus.append("Clip(0)" if hi is None else f"Clip(0, {hi:g})")
            elif known and lo is not None and hi is not None and lo < 0 < hi:
                others.append(f"Clip({lo:g}, {hi:g})")
        elif n.op_type in OTHERS:
            others.append(n.op_type)
    return Census(tuple(relus), tuple(others))
