"""Recipro-CAM / ViT-ReciproCAM inside the graph: the tail after the layer runs once more, on every
image's h*w masked copies of the layer's tensor batched together (N*h*w rows); ViT-ReciproCAM masks
the pre-norm block's input and its first norm's output (:mod:`agnostic_cam.engine.blocks`) alike.

The tail's nodes are copied with their tensors renamed (weights shared with the original graph); the
tensors it needs from before the layer (skip connections around it) are repeated h*w times per image,
as the Python method feeds each masked copy with its own image's values. The masks are
:func:`agnostic_cam.methods.reciprocam.mosaic_mask`, the Python method's own.
"""
from __future__ import annotations

import onnx

from agnostic_cam.embed.maps import Context
from agnostic_cam.engine.blocks import prenorm_block
from agnostic_cam.engine.graph import FLOAT_TYPES, cut_tail, infer_shapes, tensor_shape
from agnostic_cam.errors import ModelError
from agnostic_cam.methods.reciprocam import mosaic_mask


def _renamed_tail(ctx: Context, starts: tuple[str, ...]) -> tuple[list[onnx.NodeProto], list[str], str]:
    """The tail after tensors ``starts``: its nodes reading ``<prefix>`` names, its extra inputs, the prefix."""
    tail = cut_tail(ctx.model, starts[0], [ctx.output], starts[1:])
    inits = {i.name for i in tail.model.graph.initializer}
    prefix = ctx.b.fresh("tail") + "/"

    def rn(t: str) -> str:
        return t if not t or t in inits else prefix + t

    nodes = []
    for n in tail.model.graph.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.input[:] = [rn(i) for i in n.input]
        c.output[:] = [rn(o) for o in n.output]
        c.name = prefix + (n.name or n.output[0])
        nodes.append(c)
    return nodes, tail.extra_inputs, prefix


def _check_extras(ctx: Context, extras: list[str]) -> None:
    infos = {vi.name: vi for vi in infer_shapes(ctx.model).graph.value_info}
    for e in extras:
        vi = infos.get(e)
        shape = None if vi is None else tensor_shape(vi)
        if vi is None or vi.type.tensor_type.elem_type not in FLOAT_TYPES or not shape:
            raise ModelError(f"the graph after the target layer also reads {e!r}, which is not a float tensor with a "
                             "batch axis; reciprocam cannot be embedded at this layer (pick a later one)")


def reciprocam(ctx: Context):
    b, m = ctx.b, ctx.method
    _, h, w = ctx.shape
    # ViT-ReciproCAM: the pre-norm block's input and its first norm's output, masked alike (the Python method's
    # Capture.block); else the layer's own tensor
    block = m.uses_block(len(ctx.native_shape) + 1)
    starts = prenorm_block(ctx.model, ctx.native, ctx.output) if block else (ctx.native,)
    axis = 2 if block else ctx.channel_axis
    mask = mosaic_mask(ctx.native_shape, axis, (h, w), m.gaussian, m.keep_prefix)
    nodes, extras, prefix = _renamed_tail(ctx, starts)
    _check_extras(ctx, extras)
    mask = mask.astype(onnx.helper.tensor_dtype_to_np_dtype(ctx.native_type))  # 0, 1 and 1/16..1/4: exact in fp16
    mask = b.const(mask, "mosaic_mask")
    for t in starts:
        masked = b.op("Mul", [b.unsqueeze(t, [1]), mask])   # (N, hw, ...)
        b.nodes.append(onnx.helper.make_node("Reshape", [masked, b.concat([b.ints([-1]), b.shape(t, 1)])],
                                             [prefix + t], name=prefix + "mosaic_" + t))
    for e in extras:
        b.nodes.append(onnx.helper.make_node("Identity", [b.repeat_rows(e, h * w)], [prefix + e],
                                             name=prefix + "repeat_" + e))
    b.nodes.extend(nodes)
    y = prefix + ctx.output                                                                  # (N*hw, K)
    if m.softmax:  # in float64, as the Python method
        y = b.op("Cast", [b.op("Softmax", [b.op("Cast", [y], to=onnx.TensorProto.DOUBLE)], axis=1)],
                 to=onnx.TensorProto.FLOAT)
    elif ctx.scores != ctx.output:  # an fp16 graph: scores in float32
        y = b.op("Cast", [y], to=onnx.TensorProto.FLOAT)
    y3 = b.op("Reshape", [y, b.concat([b.ints([-1, h * w]), b.shape(y, 1, 2)])])           # (N, hw, K)
    cam = b.op("Reshape", [b.pick_class(y3, ctx.classes), b.ints([-1, 1, h, w])])
    per = None
    if ctx.per_class:
        per = b.op("Reshape", [b.op("Transpose", [y3], perm=[0, 2, 1]),
                               b.concat([b.shape(y3, 0, 1), b.shape(y3, 2, 3), b.ints([h, w])])])
    return cam, per

