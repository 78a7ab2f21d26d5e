"""ONNX graph surgery: expose intermediate tensors, cut the tail after a tensor, list layers.

All functions take and return ``onnx.ModelProto`` and never modify their argument.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper
from agnostic_cam.engine.shapes import infer_shapes  # noqa: F401 - part of this module's interface
from agnostic_cam.errors import ModelError

# names of the tensors an adapter's export adds to the graph's outputs
OUTPUT = "output"
ACTIVATION = "activation"
NATIVE = "layer_output"  # the layer's own tensor, when ACTIVATION is a reshape of it (tokens, channels-last)


# Float element types a feature map may have (fp16 graphs, fp16 inside keep_io_types graphs, fp64).
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}


def tensor_shape(vi: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    """Static shape of a value info: ints, symbolic names or None per dim; None if unknown rank."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)


def produced_tensors(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node for o in n.output if o}


def head_op(model: onnx.ModelProto, name: str) -> str | None:
    """The op type that produces tensor ``name``, seen through Identity / Reshape / Flatten / Squeeze /
    Cast (None for a graph input or an unknown name): 'Sigmoid' for a sigmoid head."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    while name in producer and producer[name].op_type in ("Identity", "Reshape", "Flatten", "Squeeze", "Cast"):
        name = producer[name].input[0]
    return producer[name].op_type if name in producer else None


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Copy of ``model`` whose graph outputs also include the tensors ``names`` (in that order)."""
    known = produced_tensors(model) | {i.name for i in model.graph.input}
    missing = [n for n in names if n not in known]
    if missing:
        raise ModelError(f"tensor(s) {missing} do not exist in the ONNX graph")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    infos = _value_infos(infer_shapes(model))
    for n in names:
        if n in present:
            continue
        vi = infos.get(n)
        if vi is not None and vi.type.tensor_type.elem_type:
            new = onnx.ValueInfoProto()
            new.CopyFrom(vi)
        else:
            new = helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
        out.graph.output.append(new)
        present.add(n)
    return out


def _is_float(vi: onnx.ValueInfoProto | None) -> bool:
    """Whether a tensor is float (or of unknown type, taken as float): what a tail takes from its head."""
    return vi is None or vi.type.tensor_type.elem_type in (0, *FLOAT_TYPES, onnx.TensorProto.BFLOAT16)


@dataclass
class Tail:
    """The part of a graph from a tensor to the outputs.

    ``model`` takes ``start`` plus ``extra_inputs`` (tensors the tail needs that are computed
    before ``start``, e.g. a skip connection around it) and returns ``outputs``.
    """

    model: onnx.ModelProto
    start: str
    extra_inputs: list[str]
    outputs: list[str]


def cut_tail(model: onnx.ModelProto, start: str, outputs: list[str], also: tuple[str, ...] = ()) -> Tail:
    """Extract the subgraph that maps tensor ``start`` (and whatever else it needs) to ``outputs``.
    ``also``: further tensors the tail takes as inputs after ``start`` instead of computing them.

    Nodes needed for ``outputs`` that do not depend on the graph input (constants, shape
    arithmetic on weights) go into the tail; nodes that depend on the input but not on
    ``start`` stay in the head, and their tensors become extra inputs of the tail.
    """
    g = model.graph
    inits = {i.name for i in g.initializer}
    graph_inputs = [i.name for i in g.input if i.name not in inits]
    producer = {o: idx for idx, n in enumerate(g.node) for o in n.output if o}
    for s in (start, *also):
        if s not in producer and s not in graph_inputs:
            raise ModelError(f"tensor {s!r} does not exist in the ONNX graph")

    # Forward reachability: which tensors depend on the graph input / on `start`.
    dep_input: set[str] = set(graph_inputs)
    dep_start: set[str] = {start, *also}
    for n in g.node:  # ONNX nodes are topologically sorted
        ins = [i for i in n.input if i]
        if any(i in dep_input for i in ins):
            dep_input.update(o for o in n.output if o)
        if any(i in dep_start for i in ins):
            dep_start.update(o for o in n.output if o)

    # Backward from the outputs, stopping at `start` and at head tensors.
    infos = _value_infos(infer_shapes(model))
    needed_nodes: set[int] = set()
    extra: list[str] = []
    stack = list(outputs)
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen or t == start or t in also or t in inits or not t:
            continue
        seen.add(t)
        idx = producer.get(t)
        if t in dep_input and t not in dep_start and (idx is None or _is_float(infos.get(t))):
            extra.append(t)  # computed by the head from the image, fed to the tail (shape arithmetic and other
            continue         # non-float tensors are recomputed in the tail from float ones, on the tail's rows)
        if idx is None:
            continue
        needed_nodes.add(idx)
        stack.extend(g.node[idx].input)
        for attr in g.node[idx].attribute:  # subgraph-free ops only; If/Loop bodies are not followed
            if attr.type == onnx.AttributeProto.GRAPH:
                raise ModelError("cannot cut a graph with control flow (If/Loop) after the target layer")

    nodes = [g.node[i] for i in sorted(needed_nodes)]
    used = {i for n in nodes for i in n.input}

    def vi(name: str) -> onnx.ValueInfoProto:
        v = infos.get(name)
        if v is not None and v.type.tensor_type.elem_type:
            c = onnx.ValueInfoProto()
            c.CopyFrom(v)
            return c
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)

    extra = sorted(set(extra), key=lambda t: producer.get(t, -1))
    graph = helper.make_graph(
        nodes,
        f"{g.name}_tail",
        [vi(s) for s in (start, *also)] + [vi(e) for e in extra],
        [vi(o) for o in outputs],
        initializer=[i for i in g.initializer if i.name in used],
    )
    tail = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return Tail(tail, start, extra, list(outputs))


@dataclass
class LayerInfo:
    """A candidate target layer of an ONNX graph: a tensor with a spatial (C, h, w) shape."""

    name: str          # tensor name
    op_type: str       # op that produces it
    shape: tuple       # static shape (batch dim may be symbolic)
    node_name: str     # the producing node's name, usually close to the framework's layer name


def spatial_tensors(model: onnx.ModelProto, rank: int = 4) -> list[LayerInfo]:
    """Rank-4 float tensors produced by nodes of ``model``, in graph order (``rank`` 5: the tensors of
    a volume / clip model)."""
    inferred = infer_shapes(model)
    infos = _value_infos(inferred)
    out = []
    for n in inferred.graph.node:
        for o in n.output:
            v = infos.get(o)
            if v is None:
                continue
            shape = tensor_shape(v)
            if shape is not None and len(shape) == rank and v.type.tensor_type.elem_type in FLOAT_TYPES:
                out.append(LayerInfo(o, n.op_type, shape, n.name))
    return out


_OTHER_FLOATS = (onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` computed in float32 where it uses float64/float16/bfloat16 (a ``.double()`` or
    ``.half()`` PyTorch model exported as is, which ONNX Runtime's CPU kernels do not run):
    initializers, constants, Cast targets and declared tensor types become float32. Returns
    ``model`` itself when nothing is in another float type."""
    from onnx import numpy_helper

    def other(t: onnx.TensorProto) -> bool:
        return t.data_type in _OTHER_FLOATS

    def f32(t: onnx.TensorProto) -> onnx.TensorProto:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype("float32"), t.name)

    g = model.graph
    infos = list(g.input) + list(g.output) + list(g.value_info)
    if not (any(vi.type.tensor_type.elem_type in _OTHER_FLOATS for vi in infos) or any(map(other, g.initializer))
            or any(a.i in _OTHER_FLOATS for n in g.node if n.op_type == "Cast" for a in n.attribute if a.name == "to")):
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        if other(t):
            t.CopyFrom(f32(t))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type in _OTHER_FLOATS:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i in _OTHER_FLOATS:
                a.i = onnx.TensorProto.FLOAT
            elif a.type == onnx.AttributeProto.TENSOR and other(a.t):
                a.t.CopyFrom(f32(a.t))
    return m


def depends_on(model: onnx.ModelProto, source: str, target: str) -> bool:
    """Whether tensor ``target`` is computed from tensor ``source`` in ``model``'s graph (nodes are
    topologically sorted; subgraph bodies count as reading every tensor they name)."""
    reached = {source}
    for n in model.graph.node:
        ins = set(n.input)
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ins |= {i for sub in attr.g.node for i in sub.input}
        if ins & reached:
            reached.update(o for o in n.output if o)
    return target in reached


def toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where each input is produced before it is read (``available``: graph
    inputs and initializers). A cycle or a missing tensor leaves the rest in its order."""
    done, out, pending = set(available), [], list(nodes)
    while pending:
        ready = [n for n in pending if all(i in done for i in n.input if i)]
        if not ready:
            return out + pending
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
        for n in ready:
            out.append(n)
            done.update(o for o in n.output if o)
    return out


def topologically_sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself when its nodes are in topological order, else a sorted copy (some converters,
    e.g. fp16 ones with ``keep_io_types``, append the input casts at the end of the node list)."""
    g = model.graph
    avail = {i.name for i in g.input} | {i.name for i in g.initializer}
    seen = set(avail)
    for n in g.node:
        if not all(i in seen for i in n.input if i):
            break
        seen.update(n.output)
    else:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    replace_repeated(out.graph.node, toposort([c for c in out.graph.node], avail))
    return out


def replace_repeated(field, items: list) -> None:
    """Set a repeated protobuf ``field`` (e.g. ``graph.node``) to copies of ``items``, which may be
    elements of ``field`` itself (they are copied before the field is cleared)."""
    copies = []
    for item in items:
        c = type(item)()
        c.CopyFrom(item)
        copies.append(c)
    del field[:]
    field.extend(copies)
