"""engine/shapes.infer_shapes (weights kept out of the serialised copy) equals onnx's own
``shape_inference.infer_shapes(strict_mode=False, data_prop=True)`` on the graph kinds the suite
meets: a legacy TorchScript export (Shape -> Gather -> Concat -> Reshape, data propagation through
integer initializers), an fp16 conversion (large FLOAT16 initializers), an IR-3 graph whose
initializers are also graph inputs, and a hand-built graph with an If subgraph reading an outer
weight. The reference is the plain call on the unmodified model, so every value_info, output and
input must match byte for byte, and the weights must come back untouched.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

from agnostic_cam.engine.shapes import LARGE, infer_shapes


def _plain(model: onnx.ModelProto) -> onnx.ModelProto:
    return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def _by_name(items) -> dict[str, bytes]:
    return {vi.name: vi.SerializeToString() for vi in items}


def _assert_same(model: onnx.ModelProto) -> None:
    before = model.SerializeToString()
    want, got = _plain(model), infer_shapes(model)
    assert model.SerializeToString() == before  # the argument is never modified
    assert _by_name(got.graph.value_info) == _by_name(want.graph.value_info)
    assert [o.SerializeToString() for o in got.graph.output] == [o.SerializeToString() for o in want.graph.output]
    assert [i.SerializeToString() for i in got.graph.input] == [i.SerializeToString() for i in want.graph.input]
    weights = [t.SerializeToString() for t in model.graph.initializer]
    assert [t.SerializeToString() for t in got.graph.initializer] == weights
    assert [n.SerializeToString() for n in got.graph.node] == [n.SerializeToString() for n in want.graph.node]
    assert len(got.graph.value_info) > 0


@pytest.fixture(scope="module")
def legacy(resnet18, torch) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(resnet18, (torch.zeros(1, 3, 32, 32),), buf, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "n"}})
    model = onnx.load_from_string(buf.getvalue())
    assert any(n.op_type == "Flatten" or n.op_type == "Reshape" for n in model.graph.node)
    return model


def test_legacy_export(legacy):
    assert sum(np.prod(t.dims) > LARGE for t in legacy.graph.initializer) > 10  # weights do leave the copy
    _assert_same(legacy)


def test_fp16_conversion(legacy):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _assert_same(convert_float_to_float16(legacy, keep_io_types=True))


def test_ir3_initializers_listed_as_inputs():
    w = numpy_helper.from_array(np.ones((8, 300), np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 4, 600], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Reshape", ["y", "shape"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 300])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], initializer=[w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 3
    _assert_same(model)
    assert infer_shapes(model).graph.output[0].type.tensor_type.shape.dim[2].dim_value == 600  # data_prop read `shape`


def test_if_subgraph_reads_an_outer_weight():
    w = numpy_helper.from_array(np.ones((16, 40), np.float32), "w")
    branch = lambda name, op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["x", "w"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("then", "MatMul"),
                            else_branch=branch("else", "MatMul"))
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["y"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], initializer=[w])
    _assert_same(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_uninferable_graph_comes_back_as_is():
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="nowhere")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.ones(1000, np.float32), "unused")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("nowhere", 1)])
    got = infer_shapes(model)
    assert got.graph.output[0].SerializeToString() == _plain(model).graph.output[0].SerializeToString()
