"""Attention probabilities found in an ONNX graph, whatever kernel the framework used.

A transformer block's attention probabilities are the output of a ``Softmax`` over keys of shape
(N, heads, T, T): exported PyTorch models (eager attention, ``F.scaled_dot_product_attention`` and
``nn.MultiheadAttention`` alike: the legacy exporter decomposes them into MatMul / Softmax / MatMul)
and bare ONNX files hold them as plain tensors.

- :func:`find_attention`: every such Softmax with the block's output tensor (the residual stream
  after the block's MLP), in graph order.
- :func:`with_block_heads`: the graph with one more output per block, the model's head applied to
  that block's tokens mean-pooled (LeGrad's layer-wise score: the tail after the last block, fed
  the block's mean token at every position).
- :func:`patch_grids`: (h, w) of the graph's rank-4 tensors, which settle the token split.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from agnostic_cam.engine import graph as G
from agnostic_cam.errors import ModelError


@dataclass(frozen=True)
class AttentionTensor:
    """One block's attention probabilities: ``name`` (the Softmax output, (N, heads, T, T)), ``block``
    (its index among the graph's attention blocks), ``heads``, ``tokens`` (T), ``output`` (the
    block's output tokens (N, T, C), None when the graph does not tell) and ``node`` (the Softmax)."""

    name: str
    block: int
    heads: int | None
    tokens: int | None
    output: str | None
    node: str
    op_type: str = "Softmax"
    layout: str = "attention"

    @property
    def shape(self) -> tuple:
        return ("N", self.heads, self.tokens, self.tokens)


def _computed(model: onnx.ModelProto) -> set[str]:
    """Tensors that depend on a graph input (not weights or constants)."""
    inits = {i.name for i in model.graph.initializer}
    dep = {i.name for i in model.graph.input if i.name not in inits}
    for n in model.graph.node:
        if any(i in dep for i in n.input if i):
            dep.update(o for o in n.output if o)
    return dep


def _axis(n: onnx.NodeProto, rank: int) -> int:
    axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), -1)
    return axis + rank if axis < 0 else axis


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def find_attention(model: onnx.ModelProto, shapes: dict | None = None) -> list[AttentionTensor]:
    """The attention probabilities of every block: Softmax nodes over the last axis of a rank-4
    tensor (N, heads, T, T) with as many keys as queries, computed from the input.

    ``shapes``: measured shapes {tensor: shape} for tensors static inference leaves open."""
    infos = G._value_infos(G.infer_shapes(model))
    computed = _computed(model)
    shapes = shapes or {}
    found = []
    for n in model.graph.node:
        if n.op_type != "Softmax" or n.output[0] not in computed:
            continue
        shape = shapes.get(n.output[0])
        if shape is None and n.output[0] in infos:
            shape = G.tensor_shape(infos[n.output[0]])
        if shape is None or len(shape) != 4 or _axis(n, 4) != 3:
            continue
        t, s = shape[2], shape[3]
        if t != s and not (t is None and s is None):
            continue
        found.append((n, _dim(shape[1]), _dim(t)))
    blocks = _block_outputs(model, [f[0] for f in found], computed, infos)
    return [AttentionTensor(n.output[0], i, h, t, b, n.name) for i, ((n, h, t), b) in enumerate(zip(found, blocks))]


def open_softmaxes(model: onnx.ModelProto) -> list[str]:
    """Outputs of Softmax nodes whose rank static shape inference cannot tell (tf2onnx's Einsum
    attention): their shapes are measured with one run before :func:`find_attention`."""
    infos = G._value_infos(G.infer_shapes(model))
    out = []
    for n in model.graph.node:
        if n.op_type == "Softmax":
            shape = G.tensor_shape(infos[n.output[0]]) if n.output[0] in infos else None
            if shape is None or len(shape) != 4:
                out.append(n.output[0])
    return out


def _downstream(model: onnx.ModelProto, start: str, first: int) -> set[str]:
    """Tensors computed from ``start`` (nodes from index ``first`` on)."""
    dep = {start}
    for n in model.graph.node[first:]:
        if any(i in dep for i in n.input if i):
            dep.update(o for o in n.output if o)
    return dep


def _block_outputs(model, softmaxes: list, computed: set[str], infos: dict) -> list[str | None]:
    """Each attention's block output, for pre-norm blocks ``x + attn(norm(x))`` then ``+ mlp(norm(.))``:
    the first ``Add`` after the Softmax of a tensor it reads and one it does not (the stream x: the
    attention's residual sum r), then the first ``Add`` of r itself and a tensor computed from r (the
    MLP's residual sum). None where the graph has no such pair (post-norm blocks)."""
    nodes = list(model.graph.node)
    order = {id(n): i for i, n in enumerate(nodes)}
    out = []
    for sm in softmaxes:
        i0 = order[id(sm)]
        dep = _downstream(model, sm.output[0], i0)
        r1 = next((k for k in range(i0 + 1, len(nodes)) if nodes[k].op_type == "Add" and len(nodes[k].input) == 2
                   and all(i in computed for i in nodes[k].input)
                   and sum(i in dep for i in nodes[k].input) == 1), None)
        if r1 is None:
            out.append(None)
            continue
        r = nodes[r1].output[0]
        after = _downstream(model, r, r1 + 1)
        r2 = next((k for k in range(r1 + 1, len(nodes)) if nodes[k].op_type == "Add" and r in nodes[k].input
                   and any(i != r and i in after for i in nodes[k].input)), None)
        out.append(None if r2 is None else nodes[r2].output[0])
    return out


def patch_grids(model: onnx.ModelProto) -> list[tuple[int, int]]:
    """(h, w) read both ways from every rank-4 tensor with static spatial sizes (a patch embedding's
    (N, C, h, w) output, or its channels-last form)."""
    infos = G._value_infos(G.infer_shapes(model))
    grids = []
    for n in model.graph.node:
        if n.op_type == "Softmax":
            continue
        for o in n.output:
            shape = G.tensor_shape(infos[o]) if o in infos else None
            if shape is not None and len(shape) == 4 and all(_dim(d) for d in shape[1:]):
                grids += [(shape[2], shape[3]), (shape[1], shape[2])]
    return grids


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def with_block_heads(model: onnx.ModelProto, output: str, blocks: list[str], last: str) -> tuple[onnx.ModelProto, list[str]]:
    """Copy of ``model`` with one extra output per tensor of ``blocks`` (N, T, C): the part of the
    graph from ``last`` (the last block's output) to ``output``, fed the block's tokens averaged over
    T at every position. For a ViT whose head reads ``norm(x)[:, 0]`` or ``mean_t norm(x)`` this is
    ``head(norm(mean_t z^l))``, LeGrad's score of block l (Bousselham et al. 2024, eq. 4).
    Returns (model, names of the new outputs)."""
    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    if last not in producer:
        raise ModelError(f"tensor {last!r} is not computed in the graph")
    downstream = {last}
    tail = []
    for i in range(producer[last] + 1, len(g.node)):
        n = g.node[i]
        if any(x in downstream for x in n.input if x):
            downstream.update(o for o in n.output if o)
            tail.append(n)
    if output not in downstream:
        raise ModelError(f"the output {output!r} does not depend on the last block's tokens {last!r}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    new_nodes, names = [], []
    for b, z in enumerate(blocks):
        tag = f"agnostic_cam_block{b}"
        mean, shp, fed = f"{tag}_mean", f"{tag}_shape", f"{tag}_tokens"
        if _opset(model) >= 18:
            axes = f"{tag}_axes"
            new_nodes.append(helper.make_node("Constant", [], [axes], f"{tag}/axes",
                                              value=helper.make_tensor(axes, 7, [1], [1])))
            new_nodes.append(helper.make_node("ReduceMean", [z, axes], [mean], f"{tag}/mean", keepdims=1))
        else:
            new_nodes.append(helper.make_node("ReduceMean", [z], [mean], f"{tag}/mean", axes=[1], keepdims=1))
        new_nodes += [helper.make_node("Shape", [z], [shp], f"{tag}/shape"),
                      helper.make_node("Expand", [mean, shp], [fed], f"{tag}/expand")]
        rename = {last: fed}
        for n in tail:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = f"{n.name}_{tag}" if n.name else ""
            for k, x in enumerate(c.input):
                c.input[k] = rename.get(x, x)
            for k, o in enumerate(c.output):
                if o:
                    rename[o] = c.output[k] = f"{o}_{tag}"
            new_nodes.append(c)
        names.append(rename[output])
        m.graph.output.append(helper.make_tensor_value_info(rename[output], onnx.TensorProto.FLOAT, None))
    m.graph.node.extend(new_nodes)
    return m, names
