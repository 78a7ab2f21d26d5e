"""Assemble the embedded model: the adapter's exported graph, its original outputs unchanged, plus
``saliency`` (N, H, W), ``saliency_raw`` (N, h, w) and, with ``per_class``, ``saliency_per_class``."""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper

from agnostic_cam.core import layout as L
from agnostic_cam.embed import maps, mosaic, postprocess
from agnostic_cam.embed.graph import MIN_OPSET, Branch
from agnostic_cam.engine.graph import infer_shapes
from agnostic_cam.errors import ModelError, OptionError
from agnostic_cam.methods import get_method

BUILDERS = {"cam": maps.cam, "gradcam": maps.gradcam, "activation_map": maps.activation_map,
            "eigencam": maps.eigencam, "reciprocam": mosaic.reciprocam, "vit_reciprocam": mosaic.reciprocam}
EMBEDDABLE = tuple(BUILDERS)
SALIENCY, RAW, PER_CLASS = "saliency", "saliency_raw", "saliency_per_class"


def _sample_shape(adapter, input_shape) -> tuple:
    if input_shape is not None:
        return tuple(int(d) for d in input_shape)
    if adapter.sample_shape is None:
        raise OptionError("embed needs one image's shape: pass input_shape=(C, H, W) (or (H, W, C) for a "
                          "channels-last model; --input-shape 3,224,224 on the command line), or build the "
                          "explainer with input_shape=")
    return tuple(adapter.sample_shape)


def _opset(model: onnx.ModelProto) -> int:
    v = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if v < MIN_OPSET:
        raise ModelError(f"the graph uses ONNX opset {v}; the explanation branch needs opset {MIN_OPSET} or later. "
                         f"Convert it first: onnx.version_converter.convert_version(model, {MIN_OPSET})")
    return v


def build(adapter, method: str, input_shape=None, per_class: bool = False, **options) -> onnx.ModelProto:
    """The embedded ModelProto for ``adapter``'s model and target layer (see :func:`agnostic_cam.embed.embed`)."""
    mcls = get_method(method)
    if mcls.name not in BUILDERS:
        raise OptionError(f"method {mcls.name!r} cannot live inside an ONNX graph; embeddable methods: "
                          f"{', '.join(EMBEDDABLE)} (cam and gradcam on global-average-pool + linear heads)")
    m = mcls.create(dict(options))
    sample = _sample_shape(adapter, input_shape)
    adapter.require_layer(mcls.name, sample)
    engine = adapter.engine(sample)
    model = engine.model
    b = Branch(_opset(model))
    x0 = np.zeros((1, *sample), np.float32)
    act, native = engine.run(x0, [adapter.activation_name, adapter.native_name])
    types = _elem_types(model)
    chw = adapter.activation_name
    if adapter.activation_layout == L.NHWC:
        chw = b.op("Transpose", [chw], perm=[0, 3, 1, 2])
    shape = tuple(L.to_chw(act, adapter.activation_layout).shape[1:])
    ctx = maps.Context(b, model, _float32(b, chw, types.get(adapter.activation_name)), adapter.native_name,
                       tuple(native.shape[1:]), adapter.native_channel_axis, adapter.output_name, shape, m, per_class,
                       scores=_float32(b, adapter.output_name, types.get(adapter.output_name)),
                       native_type=types.get(adapter.native_name, onnx.TensorProto.FLOAT))
    if engine.run(x0, [adapter.output_name])[0].ndim != 2 and mcls.name not in ("activation_map", "eigencam"):
        raise ModelError(f"method {mcls.name!r} embeds for classifiers (an (N, K) output); use activation_map or "
                         "eigencam, which need no class")
    cam, per = BUILDERS[mcls.name](ctx)
    inp = engine.input_name
    a, c = L.spatial_axes(adapter.layout)
    size = b.op("Gather", [b.shape(inp), b.ints([a, c])], axis=0)
    heat = b.squeeze(postprocess.heatmap(b, cam, size), [1])
    outs = [(SALIENCY, heat, ["batch", "height", "width"]), (RAW, b.squeeze(cam, [1]), ["batch", shape[1], shape[2]])]
    if per is not None:
        outs.append((PER_CLASS, postprocess.per_map(b, per), ["batch", "classes", shape[1], shape[2]]))
    return _assemble(model, adapter.original_outputs, b, outs, mcls.name)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type shape inference knows."""
    g = infer_shapes(model).graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in (*g.value_info, *g.output, *g.input)}


def _float32(b: Branch, name: str, elem: int | None) -> str:
    """``name`` cast to float32 where the graph computes in another float type (fp16 graphs keep their
    own precision; the explanation branch runs in float32, as the Python method on their outputs)."""
    return name if elem in (None, onnx.TensorProto.FLOAT) else b.op("Cast", [name], to=onnx.TensorProto.FLOAT)


def _assemble(model: onnx.ModelProto, originals: list[str], b: Branch, outs, method: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    keep = [o for o in g.output if o.name in originals]
    for name, tensor, dims in outs:
        b.nodes.append(helper.make_node("Identity", [tensor], [name], name=f"xai/{name}"))
        keep.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    del g.output[:]
    g.output.extend(keep)
    g.node.extend(b.nodes)
    g.initializer.extend(b.inits)
    out.metadata_props.append(onnx.StringStringEntryProto(key="agnostic_cam.embedded", value=method))
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"the embedded graph does not validate ({e}); please report it") from None
    return out


def save(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``model``; weights over 2 GiB go to an external-data file beside it."""
    big = model.ByteSize() > 2**31 - 2**20
    onnx.save_model(model, os.fspath(path), save_as_external_data=big)
