"""ONNX shape inference without serialising the weights.

``onnx.shape_inference.infer_shapes`` serialises the whole model, weights included, hands the bytes to
C++, and parses the answer back: for a ResNet-50, ~100 MB of weights serialised and parsed twice to
learn a few hundred shapes. A weight only contributes its dtype and dims to the shapes downstream
(its values matter only where data propagation reads them: small integer tensors such as the target
shape of a Reshape), so the inference runs on a light copy in which every large float initializer is
replaced by a graph input of the same name, dtype and dims, and the inferred ``value_info`` / outputs
are put back on a copy of the real model. Same answer (tests/test_shape_inference.py compares it with
the plain call on a TorchScript export, an fp16 conversion, an IR-3 graph and a graph with an If
subgraph), in a ninth of the time (a ResNet-50 TorchScript export, quiet 2-core machine: 0.039 s
against onnx's 0.354 s).
"""
from __future__ import annotations

import onnx
from onnx import helper, shape_inference

# A float initializer with more elements than this becomes a typed input in the light copy. Integer
# initializers always keep their values: data propagation (Reshape / Expand / Slice targets) reads them.
LARGE = 256
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def _numel(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n


def _light(model: onnx.ModelProto) -> tuple[onnx.ModelProto, set[str]]:
    """``model`` with its large float initializers turned into typed graph inputs (and their names)."""
    g = model.graph
    heavy = [t for t in g.initializer if t.data_type in _FLOATS and _numel(t) > LARGE]
    if not heavy:
        return model, set()
    heavy_names = {t.name for t in heavy}
    listed = {i.name for i in g.input}
    light = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, field, getattr(model, field))
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                    for t in heavy if t.name not in listed)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    lg.initializer.extend(t for t in g.initializer if t.name not in heavy_names)
    lg.sparse_initializer.extend(g.sparse_initializer)
    return light, heavy_names - listed


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape-inferred copy of ``model`` (falls back to the model itself if inference fails); the
    argument is never modified."""
    try:
        light, added = _light(model)
        inferred = shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort for exotic graphs
        return model
    if light is model:
        return inferred
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g, ig = out.graph, inferred.graph
    del g.node[:]
    g.node.extend(ig.node)  # the same nodes, with the value_info of any subgraph inferred
    del g.value_info[:]
    g.value_info.extend(ig.value_info)
    del g.output[:]
    g.output.extend(ig.output)
    del g.input[:]
    g.input.extend(i for i in ig.input if i.name not in added)
    return out
