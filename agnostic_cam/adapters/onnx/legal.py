"""Rewrite an ONNX graph into what the gradient backend's converter (onnx2torch) knows. Pure onnx.

onnx2torch implements operators up to opset 17 (e.g. ``ReduceMean-13``, axes as an attribute).
Today's exporters write newer graphs: PyTorch's default (dynamo) exporter writes opset 18+
(``ReduceMean-18`` with the axes as an input, ``Reshape(allowzero=1)``), and opset 20 adds ``Gelu``.
:func:`legalize` makes such a graph convertible without changing what it computes:

1. ``Gelu`` (opset 20, no older version) is expanded into ``Erf`` / ``Tanh`` arithmetic;
2. the graph is converted down to opset 17 with ONNX's own version converter (which moves
   ``Reduce*`` axes and ``Split`` sizes back to attributes, etc.). The converter has no down-adapter
   for a few operators whose newer versions only add options (``Pad-18/19``: an ``axes`` input and
   ``mode='wrap'``; ``ConstantOfShape-20``: new element types); nodes that use none of the new
   options are set aside during the conversion and put back unchanged, so a dynamo-exported Swin
   (zero-padding to the window size, a zero attention mask) converts;
3. ``Reshape(allowzero=1)`` with a constant target shape that contains no 0 becomes
   ``allowzero=0`` (the two are the same then; onnx2torch implements only the latter);
4. ``LayerNormalization`` reads its scale and bias through an ``Identity``: onnx2torch builds an
   ``nn.LayerNorm`` from the input's *statically inferred* shape when both are initializers, and
   where shape inference loses the trailing dims (Swin's window reshapes feed ``Pad`` / ``Reshape``
   with computed shapes) that gives ``normalized_shape=[0]`` and a RuntimeError at the first
   forward. With non-initializer scale/bias it uses its runtime module, which takes the normalized
   shape from the tensor itself (``x.shape[axis:]``): the same formula, on any input size.

:func:`describe_failure` turns the converter's exception into one line naming the operator and
its opset version.
"""
from __future__ import annotations

import math
import re

import numpy as np
import onnx
from onnx import helper, numpy_helper

from agnostic_cam.errors import BackendError

TARGET_OPSET = 17  # the newest opset whose operators onnx2torch converts


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _gelu(n: onnx.NodeProto, inits: list[onnx.TensorProto], k: int) -> list[onnx.NodeProto]:
    """Gelu(x) = 0.5 x (1 + erf(x / sqrt 2)); approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x, y = n.input[0], n.output[0]
    p = f"_gelu{k}_"
    approx = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "approximate"), b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx

    def c(name: str, v: float) -> str:
        inits.append(numpy_helper.from_array(np.array(v, np.float32), p + name))
        return p + name

    nodes = []
    if approx == "tanh":
        nodes += [helper.make_node("Mul", [x, x], [p + "x2"]), helper.make_node("Mul", [p + "x2", x], [p + "x3"]),
                  helper.make_node("Mul", [p + "x3", c("k", 0.044715)], [p + "kx3"]),
                  helper.make_node("Add", [x, p + "kx3"], [p + "in"]),
                  helper.make_node("Mul", [p + "in", c("s", math.sqrt(2 / math.pi))], [p + "arg"]),
                  helper.make_node("Tanh", [p + "arg"], [p + "t"])]
    else:
        nodes += [helper.make_node("Div", [x, c("r2", math.sqrt(2.0))], [p + "arg"]),
                  helper.make_node("Erf", [p + "arg"], [p + "t"])]
    nodes += [helper.make_node("Add", [p + "t", c("one", 1.0)], [p + "1t"]),
              helper.make_node("Mul", [x, p + "1t"], [p + "x1t"]),
              helper.make_node("Mul", [p + "x1t", c("half", 0.5)], [y])]
    return nodes


_ASIDE = "agnostic_cam.aside"  # a domain the version converter leaves alone


def _same_in_17(n: onnx.NodeProto) -> bool:
    """True when ``n`` (a newer-opset node) means the same under its opset-<=17 definition."""
    if n.domain not in ("", "ai.onnx"):
        return False
    if n.op_type == "Pad":
        mode = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "mode"), b"constant")
        return (len(n.input) < 4 or not n.input[3]) and mode in (b"constant", b"reflect", b"edge")
    if n.op_type == "ConstantOfShape":
        value = next((a.t for a in n.attribute if a.name == "value"), None)
        return value is None or value.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64,
                                                    onnx.TensorProto.INT32, onnx.TensorProto.BOOL)
    return False


def _convert_version(m: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """ONNX's version converter to ``version``, with the nodes of :func:`_same_in_17` set aside."""
    from onnx import version_converter

    aside = [n for n in m.graph.node if _same_in_17(n)]
    for n in aside:
        n.domain = _ASIDE
    if aside:
        m.opset_import.append(helper.make_opsetid(_ASIDE, 1))
    out = version_converter.convert_version(m, version)
    for n in out.graph.node:
        if n.domain == _ASIDE:
            n.domain = ""
    keep = [o for o in out.opset_import if o.domain != _ASIDE]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


def _expand_new_ops(m: onnx.ModelProto) -> None:
    """Replace operators that have no version <= 17 by equivalent older ones (in place)."""
    new, inits = [], []
    for k, n in enumerate(m.graph.node):
        if n.op_type == "Gelu" and n.domain in ("", "ai.onnx"):
            new.extend(_gelu(n, inits, k))
        else:
            new.append(n)
    if inits:
        del m.graph.node[:]
        m.graph.node.extend(new)
        m.graph.initializer.extend(inits)


def _fix_allowzero(m: onnx.ModelProto) -> None:
    consts = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    for n in m.graph.node:
        if n.op_type != "Reshape":
            continue
        for a in n.attribute:
            if a.name == "allowzero" and a.i == 1 and n.input[1] in consts:
                if 0 not in numpy_helper.to_array(consts[n.input[1]]).tolist():
                    a.i = 0


def _layer_norm_runtime_shape(m: onnx.ModelProto) -> None:
    """Route every LayerNormalization's initializer scale / bias through an Identity (in place), see 4."""
    inits = {i.name for i in m.graph.initializer}
    new = []
    for k, n in enumerate(m.graph.node):
        if n.op_type == "LayerNormalization" and n.domain in ("", "ai.onnx"):
            for j in range(1, len(n.input)):
                if n.input[j] in inits:
                    alias = f"_ln{k}_{j}_{n.input[j]}"
                    new.append(helper.make_node("Identity", [n.input[j]], [alias], name=alias))
                    n.input[j] = alias
        new.append(n)
    del m.graph.node[:]
    m.graph.node.extend(new)


def legalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in opset <= 17 terms (see the module docstring); BackendError if impossible."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _expand_new_ops(m)
    version = opset(m)
    if version > TARGET_OPSET:
        try:
            m = _convert_version(m, TARGET_OPSET)
        except Exception as e:  # noqa: BLE001 - the converter raises RuntimeError / ValueError with a C++ message
            op = re.search(r"of (\w+) exists|for (\w+)|op_type: (\w+)", str(e))
            name = next((g for g in op.groups() if g), None) if op else None
            what = f"operator {name!r}" if name else "an operator"
            raise BackendError(f"the gradient backend cannot use this opset-{version} graph: {what} has no opset-"
                               f"{TARGET_OPSET} form ({str(e).splitlines()[-1][:200]}); gradient methods are "
                               "unavailable for it, forward methods (scorecam, ablationcam, eigencam) still run. "
                               "Exporting with opset_version=17 avoids it") from None
    _fix_allowzero(m)
    _layer_norm_runtime_shape(m)
    return m


def describe_failure(e: Exception, model: onnx.ModelProto) -> str:
    """One line naming the operator (and opset) the converter could not handle."""
    text = f"{type(e).__name__}: {e}"
    found = re.search(r"operation_type='(\w+)', version=(\d+)", text)
    if found:
        return f"operator {found.group(1)!r} (opset {found.group(2)}) has no onnx2torch converter"
    ops = {n.op_type for n in model.graph.node}
    return f"onnx2torch failed ({text[:300]}); the graph uses opset {opset(model)} and operators {sorted(ops)[:30]}"
