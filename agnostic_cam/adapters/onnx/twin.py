"""The float32 twin of an fp16 or int8 ONNX graph, on which gradient methods run. Pure onnx + NumPy.

Forward methods (Score-CAM, Ablation-CAM, metrics) run on the graph as shipped. Gradients need a
differentiable float32 graph, so gradient methods run on a *twin* with the same tensor names:

- fp16 (with or without ``keep_io_types``): every fp16 initializer, constant and cast becomes
  float32; the arithmetic is the same, in float32.
- int8 QDQ (``quantize_static(..., quant_format=QDQ)``): weights are the dequantized int8 values
  ``(q - zero_point) * scale``; each activation ``QuantizeLinear -> DequantizeLinear`` becomes the
  same affine map without rounding, ``clip(x, (qmin - zp) * s, (qmax - zp) * s)``, so the
  saturation is kept and only rounding is lost; a range that starts at 0 (a ReLU the quantizer
  folded into it) gets an explicit ``Relu``, so backward rules (guided, deconv) see the model's ReLUs.
- int8 dynamic (``quantize_dynamic``): ``ConvInteger`` / ``MatMulInteger`` become ``Conv`` /
  ``MatMul`` on the dequantized weights; ``DynamicQuantizeLinear`` passes its input through
  (scale 1, zero point 0), which is exact up to rounding because its range always covers the input.
- int8 QOperator: ``QLinearConv`` / ``QLinearMatMul`` / ``QGemm`` become dequantize -> float op ->
  quantize (no rounding). Other quantized operators are refused with their name.

:func:`precision` tells which of these a graph is; the adapter reports how far the twin's outputs
are from the shipped graph's (``Explainer.describe()``).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from agnostic_cam.engine import graph as G
from agnostic_cam.errors import BackendError

_F16 = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
_DYNAMIC = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
_QOPERATOR = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
              "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax"}
_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127), np.dtype(np.uint16): (0, 65535),
           np.dtype(np.int16): (-32768, 32767)}


def precision(model: onnx.ModelProto) -> str:
    """'float32', 'float16', 'int8-dynamic', 'int8-qdq' or 'int8-qoperator' (the graph's arithmetic)."""
    ops = {n.op_type for n in model.graph.node}
    if ops & _QOPERATOR:
        return "int8-qoperator"
    if ops & _DYNAMIC:
        return "int8-dynamic"
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8-qdq"
    g = model.graph
    if (any(i.data_type in _F16 for i in g.initializer)
            or any(v.type.tensor_type.elem_type in _F16 for v in (*g.input, *g.output))
            or any(n.op_type == "Cast" and _attr(n, "to") in _F16 for n in g.node)):
        return "float16"
    return "float32"


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _widen(t: onnx.TensorProto) -> onnx.TensorProto:
    """fp16/bf16 tensor -> float32 tensor of the same name; others unchanged."""
    if t.data_type not in _F16:
        return t
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)


class _Twin:
    def __init__(self, model: onnx.ModelProto):
        self.src = model
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = [_widen(i) for i in model.graph.initializer]
        self.const: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.count = 0

    def _new(self, value: np.ndarray, hint: str) -> str:
        self.count += 1
        name = f"_twin_{hint}_{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        self.const[name] = np.asarray(value)
        return name

    def _node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> str:
        self.count += 1
        outs = outputs or [f"_twin_{op.lower()}_{self.count}"]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"_twin_{op}_{self.count}", **attrs))
        return outs[0]

    @staticmethod
    def _opt(n: onnx.NodeProto, i: int) -> str | None:
        return n.input[i] if len(n.input) > i and n.input[i] else None

    def _per_axis(self, v: np.ndarray, axis: int, rank: int) -> np.ndarray:
        if v.ndim == 0 or v.size == 1:
            return v.reshape(())
        shape = [1] * rank
        shape[axis % rank] = v.size
        return v.reshape(shape)

    def _float(self, name: str | None, axis: int = 1, rank: int | None = None) -> str | None:
        """A float32 version of tensor ``name`` (constants converted and, per axis, reshaped)."""
        if name is None:
            return None
        if name in self.const:
            v = self.const[name].astype(np.float32)
            return self._new(self._per_axis(v, axis, rank) if rank else v.reshape(()) if v.size == 1 else v, "c")
        return self._node("Cast", [name], to=onnx.TensorProto.FLOAT)

    def _dequant(self, x: str, s: str, zp: str | None, axis: int, out: str | None = None) -> str:
        """(x - zp) * s as float32: folded to an initializer when x, s and zp are constants."""
        if x in self.const and s in self.const and (zp is None or zp in self.const):
            q = self.const[x].astype(np.float32)
            sv = self._per_axis(self.const[s].astype(np.float32), axis, q.ndim)
            zv = 0 if zp is None else self._per_axis(self.const[zp].astype(np.float32), axis, q.ndim)
            val = ((q - zv) * sv).astype(np.float32)
            if out is None:
                return self._new(val, "w")
            self.inits.append(numpy_helper.from_array(val, out))
            self.const[out] = val
            return out
        if s in self.const and self.const[s].size > 1:
            raise BackendError(f"cannot build the float twin: per-axis scale on computed tensor {x!r} is not supported")
        xf = x if x not in self.const else self._float(x)
        if zp is not None:
            xf = self._node("Sub", [xf, self._float(zp)])
        return self._node("Mul", [xf, self._float(s)], [out] if out else None)

    def _quant(self, x: str, s: str, zp: str | None, out: str | None) -> str:
        """clip(x / s + zp, qmin, qmax) in float32: quantization without rounding."""
        zdt = self.const[zp].dtype if zp is not None and zp in self.const else np.dtype(np.uint8)
        lo, hi = _QRANGE.get(zdt, (0, 255))
        if s in self.const and self.const[s].size > 1:
            raise BackendError(f"cannot build the float twin: per-axis quantization of computed tensor {x!r} is not supported")
        if zp is not None and zp in self.const and self.const[zp].size == 1 and float(self.const[zp].ravel()[0]) == lo:
            # the range starts at 0: a ReLU folded into the quantization (QDQ drops Relu nodes); made explicit so
            # the twin has the model's ReLUs for guided / deconv rules (same values: clip(relu(x)) = clip(x))
            x = self._node("Relu", [x])
        y = self._node("Div", [x, self._float(s)])
        if zp is not None:
            y = self._node("Add", [y, self._float(zp)])
        # Max / Min, not Clip: a Clip(0, m) would count as a ReLU6 for the backward rules
        y = self._node("Max", [y, self._new(np.float32(lo), "lo")])
        return self._node("Min", [y, self._new(np.float32(hi), "hi")], [out] if out else None)

    def _zp_sub(self, x: str, zp: str | None) -> str:
        xf = self._float(x) if x in self.const else self._node("Cast", [x], to=onnx.TensorProto.FLOAT)
        return xf if zp is None else self._node("Sub", [xf, self._float(zp)])

    def _weight(self, w: str, zp: str | None, scale: str | None, axis: int) -> str:
        if w not in self.const:
            return self._dequant(w, scale, zp, axis) if scale else self._zp_sub(w, zp)
        q = self.const[w].astype(np.float32)
        zv = 0 if zp is None else self._per_axis(self.const[zp].astype(np.float32), axis, q.ndim)
        sv = 1 if scale is None else self._per_axis(self.const[scale].astype(np.float32), axis, q.ndim)
        return self._new(((q - zv) * sv).astype(np.float32), "w")

    def convert(self, n: onnx.NodeProto) -> None:
        op, ins, outs = n.op_type, list(n.input), list(n.output)
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if op == "DequantizeLinear":
            self._dequant(ins[0], ins[1], self._opt(n, 2), _attr(n, "axis", 1), outs[0])
        elif op == "QuantizeLinear":
            self._quant(ins[0], ins[1], self._opt(n, 2), outs[0])
        elif op == "DynamicQuantizeLinear":
            self._node("Identity", [ins[0]], [outs[0]])
            for o, v in zip(outs[1:], (1.0, 0.0)):
                if o:
                    self.inits.append(numpy_helper.from_array(np.float32(v), o))
                    self.const[o] = np.float32(v)
        elif op == "ConvInteger":
            x = self._zp_sub(ins[0], self._opt(n, 2))
            w = self._weight(ins[1], self._opt(n, 3), None, 0)
            self._node("Conv", [x, w], outs, **conv_attrs)
        elif op == "MatMulInteger":
            a = self._zp_sub(ins[0], self._opt(n, 2))
            b = self._weight(ins[1], self._opt(n, 3), None, -1)
            self._node("MatMul", [a, b], outs)
        elif op == "QLinearConv":
            x = self._dequant(ins[0], ins[1], ins[2], 1)
            w = self._weight(ins[3], ins[5], ins[4], 0)
            args = [x, w]
            if self._opt(n, 8):
                b = self.const.get(ins[8])
                if b is None or ins[1] not in self.const or ins[4] not in self.const:
                    raise BackendError("cannot build the float twin: QLinearConv with a computed bias or scale")
                args.append(self._new((b * self.const[ins[1]] * self.const[ins[4]]).astype(np.float32).ravel(), "b"))
            y = self._node("Conv", args, **conv_attrs)
            self._quant(y, ins[6], ins[7], outs[0])
        elif op == "QLinearMatMul":
            a = self._dequant(ins[0], ins[1], ins[2], 1)
            b = self._weight(ins[3], ins[5], ins[4], -1)
            self._quant(self._node("MatMul", [a, b]), ins[6], ins[7], outs[0])
        elif op == "QGemm" and n.domain == "com.microsoft":  # A, a_s, a_zp, B, b_s, b_zp, [C int32], [y_s, y_zp]
            a = self._dequant(ins[0], ins[1], ins[2], 1)
            trans_b = _attr(n, "transB", 0)
            b = self._weight(ins[3], ins[5], ins[4], 0 if trans_b else -1)
            args = [a, b]
            if self._opt(n, 6):
                c = self.const.get(ins[6])
                if c is None or ins[1] not in self.const or ins[4] not in self.const:
                    raise BackendError("cannot build the float twin: QGemm with a computed bias or scale")
                args.append(self._new((c * self.const[ins[1]] * self.const[ins[4]]).astype(np.float32), "b"))
            attrs = {k: v for k, v in conv_attrs.items() if k in ("alpha", "transA", "transB")}
            if self._opt(n, 7):
                self._quant(self._node("Gemm", args, **attrs), ins[7], self._opt(n, 8), outs[0])
            else:
                self._node("Gemm", args, outs, **attrs)
        elif op in _QOPERATOR or n.domain not in ("", "ai.onnx"):
            raise BackendError(f"cannot build the float twin of this quantized graph: operator {op!r} "
                               f"(domain {n.domain or 'ai.onnx'!r}) has no float equivalent here; forward methods "
                               "(scorecam, ablationcam, eigencam) still run on the shipped graph")
        else:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            if op == "Cast" and _attr(n, "to") in _F16:
                for a in c.attribute:
                    if a.name == "to":
                        a.i = onnx.TensorProto.FLOAT
            for a in c.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    a.t.CopyFrom(_widen(a.t))
            if op == "Constant" and c.attribute and c.attribute[0].type == onnx.AttributeProto.TENSOR:
                self.const[outs[0]] = numpy_helper.to_array(c.attribute[0].t)
            elif op == "Identity" and ins[0] in self.const:
                self.const[outs[0]] = self.const[ins[0]]
            self.nodes.append(c)


def float_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 copy of ``model`` with the same tensor names (see the module docstring).

    A float32 graph is returned as it is. Raises BackendError naming an operator that has no float
    equivalent here.
    """
    if precision(model) == "float32":
        return model
    t = _Twin(model)
    for n in model.graph.node:
        t.convert(n)
    produced = {o for n in t.nodes for o in n.output}
    used = {i for n in t.nodes for i in n.input} | {o.name for o in model.graph.output}
    inits = [i for i in t.inits if i.name in used and i.name not in produced]

    def widened(vis) -> list[onnx.ValueInfoProto]:
        out = []
        for vi in vis:
            c = onnx.ValueInfoProto()
            c.CopyFrom(vi)
            if c.type.tensor_type.elem_type in _F16 or (c.name in produced and c.type.tensor_type.elem_type in (
                    onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.INT32)):
                c.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
            out.append(c)
        return out

    init_names = {i.name for i in model.graph.initializer}
    avail = {i.name for i in model.graph.input} | {i.name for i in inits}
    graph = helper.make_graph(G.toposort(t.nodes, avail), f"{model.graph.name}_float_twin",
                              widened(i for i in model.graph.input if i.name not in init_names),
                              widened(model.graph.output), initializer=inits)
    twin = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return twin


def agreement(shipped, twin: onnx.ModelProto, x: np.ndarray, input_name: str, output: str) -> dict:
    """How far the twin's output is from the shipped graph's on the batch ``x`` (both on ONNX Runtime).

    shipped: the :class:`~agnostic_cam.engine.OnnxEngine` of the graph as shipped. Returns
    ``max_abs_diff`` (max |y_shipped - y_twin|), ``max_abs_output`` (max |y_shipped|, for scale),
    ``top1_agree`` (fraction of images whose arg-max matches) and ``images`` (N).
    """
    from agnostic_cam.engine import OnnxEngine

    eng = OnnxEngine(twin, shipped.providers)
    a = shipped.run({input_name: x}, [output])[0].astype(np.float64)
    b = eng.run({input_name: x}, [output])[0].astype(np.float64)
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return {"max_abs_diff": float(np.abs(a - b).max()), "max_abs_output": float(np.abs(a).max()),
            "top1_agree": float(np.mean(flat_a.argmax(1) == flat_b.argmax(1))), "images": int(len(x))}
