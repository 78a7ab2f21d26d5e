"""What the tensors of a transformer ONNX graph are, beyond what static shape inference tells.

Used by :mod:`agnostic_cam.adapters.onnx.layers` to list candidate layers:

- :func:`attention_tensors`: per-head attention tensors (queries / keys / values split into heads,
  attention logits and weights, per-head outputs), which are never offered as CAM layers. Found by
  the scope the exporter wrote (node names ``/blocks.1/attn/MatMul``, or the dynamo exporter's
  ``pkg.torch.onnx.name_scopes`` metadata) and structurally: the tensors a few head-shuffling,
  scaling or softmax steps away from a ``MatMul`` of two computed tensors (Q K^T, A V), up to the
  projections (a ``MatMul`` / ``Gemm`` with a constant weight).
- :func:`prefix_only`: token tensors of which only the leading (class) token reaches the output
  (a ViT's final norm feeds the head through ``Gather(index 0, axis 1)``): their patch tokens get
  no gradient, so they are listed but never picked by default.
- :func:`measured_shapes`: shapes of tensors static inference leaves open (Swin's window
  reshapes take computed shapes), from one ONNX Runtime run on a zero image.
"""
from __future__ import annotations

import ast

import numpy as np
import onnx

from agnostic_cam.adapters.onnx.census import constants

_SCOPE_KEYS = ("pkg.torch.onnx.name_scopes",)
# ops inside an attention block between the projections and the head-wise matrix products
_HEAD_OPS = {"Reshape", "Transpose", "Mul", "Div", "Slice", "Gather", "Split", "Squeeze", "Unsqueeze", "Add", "Sub",
             "Softmax", "Cast", "Where", "Sqrt", "Identity", "Expand", "Dropout", "MatMul"}
_DEPTH = 6  # steps from a head-wise matrix product that still count as inside the attention
# ops that act on each token alone (the token axis is neither mixed nor reduced)
_PER_TOKEN = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Add",
              "Sub", "Mul", "Div", "Identity", "Dropout", "Softplus", "Mish", "Gelu", "Erf", "Abs", "Neg", "Exp", "Log",
              "Sqrt", "Pow", "Cast", "Celu", "Softsign", "Reciprocal"}


def _scopes(node: onnx.NodeProto) -> list[str]:
    """The module scopes a node was exported from: its name's path, and the dynamo exporter's metadata."""
    out = node.name.replace(".", "/").lower().split("/")[:-1]
    for p in node.metadata_props:
        if p.key in _SCOPE_KEYS:
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                continue
            for s in scopes[:-1]:  # the last entry is the op itself
                out += str(s).replace(".", "/").lower().split("/")
    return out


def in_attention(node: onnx.NodeProto) -> bool:
    """True for a node exported from inside an attention module ('attn', '*attention*' scopes)."""
    return any(s in ("attn", "attention") or "attention" in s for s in _scopes(node))


def attention_tensors(model: onnx.ModelProto, computed: set[str]) -> set[str]:
    """Tensors inside attention blocks (see the module docstring); ``computed``: tensors computed from the image."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = {o for n in model.graph.node if in_attention(n) for o in n.output if o}

    def headwise(n: onnx.NodeProto) -> bool:
        return n.op_type == "MatMul" and all(i in computed for i in n.input)

    seen: set[str] = set()

    def back(t: str, depth: int) -> None:
        n = producer.get(t)
        if t in seen or n is None or depth > _DEPTH:
            return
        seen.add(t)
        out.add(t)
        if n.op_type in _HEAD_OPS and (n.op_type != "MatMul" or headwise(n)):
            for i in n.input:
                if i in computed:
                    back(i, depth + 1)

    def fwd(t: str, depth: int) -> None:
        for n in consumers.get(t, []):
            if depth > _DEPTH or n.op_type not in _HEAD_OPS or (n.op_type == "MatMul" and not headwise(n)):
                continue
            for o in n.output:
                if o and o not in out:
                    out.add(o)
                    fwd(o, depth + 1)

    for n in model.graph.node:
        if headwise(n):
            for i in n.input:
                back(i, 1)
            out.update(o for o in n.output if o)
            for o in n.output:
                fwd(o, 1)
    return out


def _prefix_pick(n: onnx.NodeProto, consts: dict) -> bool:
    """``x[:, 0]`` / ``x[:, :k]`` of a token tensor for a small k: Gather or Slice on axis 1 from the start."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    if n.op_type == "Gather" and attrs.get("axis", 0) == 1 and n.input[1] in consts:
        idx = consts[n.input[1]]
        return idx.size <= 16 and bool(np.all((idx >= 0) & (idx < 16)))
    if n.op_type == "Slice" and len(n.input) >= 4 and all(i in consts for i in n.input[1:4]):
        starts, ends, axes = (consts[i].reshape(-1) for i in n.input[1:4])
        return axes.tolist() == [1] and starts.tolist() == [0] and 0 < int(ends[0]) <= 16
    return False


def prefix_only(model: onnx.ModelProto, output: str) -> set[str]:
    """Tensors of which only leading tokens reach ``output`` (through per-token ops to a prefix pick)."""
    consts = constants(model.graph, max_size=16)
    weights = {i.name for i in model.graph.initializer} | set(consts)
    state = {output: 2}  # 2: every position reaches the output; 1: only leading tokens
    for n in reversed(list(model.graph.node)):
        s = max((state.get(o, 0) for o in n.output if o), default=0)
        if not s:
            continue
        if _prefix_pick(n, consts):
            ins = {n.input[0]: 1}
        elif n.op_type in _PER_TOKEN or n.op_type == "LayerNormalization" or (
                n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights):
            ins = {i: s for i in n.input if i}
        else:
            ins = {i: 2 for i in n.input if i}
        for i, v in ins.items():
            state[i] = max(state.get(i, 0), v)
    return {t for t, v in state.items() if v == 1}


def measured_shapes(model: onnx.ModelProto, input_name: str, sample: tuple, names: list[str],
                    chunk: int = 256) -> dict[str, tuple]:
    """Shapes of tensors ``names`` for one zero image of shape ``sample`` (batch included), from ONNX
    Runtime (a few runs of at most ``chunk`` extra outputs, to bound memory); {} if it cannot run."""
    from agnostic_cam.engine import graph as G
    from agnostic_cam.engine.session import onnxruntime

    ort = onnxruntime()
    vi = next(i for i in model.graph.input if i.name == input_name)
    dtype = {onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.DOUBLE: np.float64}.get(
        vi.type.tensor_type.elem_type, np.float32)
    feed = {input_name: np.zeros(sample, dtype)}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    shapes: dict[str, tuple] = {}
    for lo in range(0, len(names), chunk):
        part = names[lo:lo + chunk]
        try:
            m = G.with_outputs(model, part)
            sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            vals = sess.run(part, feed)
        except Exception:  # noqa: BLE001 - best effort: the listing then keeps what static inference gave
            return shapes
        shapes.update({k: tuple(int(d) for d in v.shape) for k, v in zip(part, vals)})
    return shapes


def fill_shapes(model: onnx.ModelProto, input_name: str, sample: tuple, wanted: set[str]) -> None:
    """Give rank-3/4 float tensors of ``wanted`` whose static shape is open their measured shape (in place)."""
    from agnostic_cam.engine import graph as G

    infos = G._value_infos(G.infer_shapes(model))
    open_ = []
    for n in model.graph.node:
        for o in n.output:
            v = infos.get(o)
            if o not in wanted or v is None or v.type.tensor_type.elem_type not in G.FLOAT_TYPES:
                continue
            shape = G.tensor_shape(v)
            if shape is not None and len(shape) in (3, 4) and not all(isinstance(d, int) and d > 0 for d in shape[1:]):
                open_.append(o)
    if not open_:
        return
    measured = measured_shapes(model, input_name, sample, open_)
    keep = [vi for vi in model.graph.value_info if vi.name not in measured]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    for name, shape in measured.items():
        model.graph.value_info.append(onnx.helper.make_tensor_value_info(
            name, infos[name].type.tensor_type.elem_type, shape))
