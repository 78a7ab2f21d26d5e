"""The pre-norm transformer block at a tensor: its input (the residual stream) and its first norm's output.

ViT-ReciproCAM (Byun & Lee 2023) masks a block's tokens in two places: the block's input where the
residual connection adds it back, and the output of the LayerNorm that feeds the block's attention
(masking before the norm would not work: a LayerNorm rescales every token, and turns a zeroed token
into its bias). In a graph a pre-norm block reads its input ``x`` twice: a residual ``Add(x, branch)``
and the norm (one ``LayerNormalization`` node, or its decomposition ReduceMean / Sub / Pow / Sqrt /
Div / Mul / Add); the norm's output ``n`` is the first tensor of the branch that a linear op (MatMul,
Gemm, Einsum) reads. :func:`prenorm_block` finds (x, n) from either tensor.
"""
from __future__ import annotations

import onnx

from agnostic_cam.errors import ModelError

NORM_OPS = {"LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization", "ReduceMean", "Sub", "Pow",
            "Mul", "Add", "Sqrt", "Div", "Reciprocal", "Neg", "Cast", "Identity"}
SHAPE_OPS = {"Shape", "Size"}  # read a tensor's shape, not its values
LINEAR = {"MatMul", "Gemm", "Einsum", "MatMulInteger", "QLinearMatMul"}


def live_nodes(g: onnx.GraphProto, output: str) -> list[onnx.NodeProto]:
    """The nodes ``output`` is computed from, in graph order (nodes feeding only other outputs dropped)."""
    producer = {o: n for n in g.node for o in n.output if o}
    keep, stack = set(), [output]
    while stack:
        n = producer.get(stack.pop())
        if n is not None and id(n) not in keep:
            keep.add(id(n))
            stack.extend(i for i in n.input if i)
    return [n for n in g.node if id(n) in keep]


def _reach(nodes: list[onnx.NodeProto], start: str) -> set[str]:
    reached = {start}
    for n in nodes:
        if any(i in reached for i in n.input):
            reached.update(o for o in n.output if o)
    return reached


def _from_input(nodes: list[onnx.NodeProto], x: str) -> str | None:
    """The norm output of the pre-norm block whose input is ``x``, or None when ``x`` is not one."""
    for res in (n for n in nodes if n.op_type == "Add" and x in n.input):
        other = [i for i in res.input if i != x]
        if len(other) != 1:
            continue
        reached = {x}  # the branch from x, without the residual Add, up to the first linear op
        for n in nodes:
            if n is res or n.op_type in SHAPE_OPS or not any(i in reached for i in n.input):
                continue
            if n.op_type in LINEAR:
                src = [i for i in n.input if i in reached]
                if len(src) == 1 and src[0] != x and other[0] in _reach(nodes, src[0]):
                    return src[0]
                break
            if n.op_type not in NORM_OPS:
                break
            reached.update(o for o in n.output if o)
    return None


def prenorm_block(model: onnx.ModelProto, tensor: str, output: str) -> tuple[str, str]:
    """(x, n) of the pre-norm block that ``tensor`` starts (x = tensor: the tokens between two blocks)
    or whose first norm ``tensor`` is (n = tensor); a ModelError naming the fix otherwise."""
    nodes = live_nodes(model.graph, output)
    n = _from_input(nodes, tensor)
    if n is not None:
        return tensor, n
    producer = {o: nd for nd in nodes for o in nd.output if o}
    stack, seen = [tensor], set()
    while stack:  # back through the norm's own ops to the block input it normalises
        t = stack.pop()
        nd = producer.get(t)
        if nd is None or nd.op_type not in NORM_OPS or t in seen:
            continue
        seen.add(t)
        for i in nd.input:
            if i in producer and _from_input(nodes, i) == tensor:
                return i, tensor
            stack.append(i)
    raise ModelError(f"tensor {tensor!r} is not the input of a pre-norm transformer block (read by a residual Add "
                     "and a LayerNorm whose output feeds the attention) nor that LayerNorm's output, so ViT-ReciproCAM "
                     "cannot mask the block as the paper does. Pick the tokens between two blocks (e.g. 'blocks.10' "
                     "for the last of 12 blocks, or 'blocks.11.norm1'), or pass layer_only=True to mask this tensor "
                     "alone and let the network recompute the rest from it")
