"""Float twins of quantized graphs, opset-18+ legalisation and conversion failures (tiny graphs, fast)."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from agnostic_cam import Explainer
from agnostic_cam.errors import BackendError
from onnx_helpers import export_torch, torch_net

SIZE = 24


@pytest.fixture(scope="module")
def x():
    return np.random.RandomState(0).randn(1, 3, SIZE, SIZE).astype(np.float32)


@pytest.fixture(scope="module")
def float_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("twin") / "small.onnx")
    onnx.save(export_torch(torch_net(), SIZE), path)
    return path


def test_qoperator_twin(float_file, x, tmp_path):
    """QLinearConv / QGemm (com.microsoft) graph: gradients on the dequantized twin, close to the float file."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"image": np.random.RandomState(i).randn(1, 3, SIZE, SIZE).astype(np.float32)}
                            for i in range(4)])

        def get_next(self):
            return next(self.it, None)

    path = str(tmp_path / "qop.onnx")
    logging.disable(logging.WARNING)
    try:
        quantize_static(float_file, path, Calibration(), quant_format=QuantFormat.QOperator)
    finally:
        logging.disable(logging.NOTSET)
    assert "QLinearConv" in {n.op_type for n in onnx.load(path).graph.node}
    ex = Explainer.from_onnx(path, progress=False)
    ref = Explainer.from_onnx(float_file, progress=False)
    for method in ("gradcam", "saliency"):
        got, want = ex.explain(x, method, target=1).heatmap, ref.explain(x, method, target=1).heatmap
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.95, method
    text = ex.describe()
    assert "precision: int8-qoperator" in text and "twin agreement: max |shipped - twin|" in text
    assert ex.adapter.twin_report["max_abs_diff"] < 0.1 * ex.adapter.twin_report["max_abs_output"]


def test_unconvertible_op_named_once(float_file, x):
    """An operator onnx2torch lacks (Shrink) after the logits: BackendError naming it and its opset, raised
    again without a new conversion; forward methods keep working."""
    m = onnx.load(float_file)
    out = m.graph.output[0].name
    for n in m.graph.node:
        n.output[:] = ["pre_shrink" if o == out else o for o in n.output]
    m.graph.node.append(helper.make_node("Shrink", ["pre_shrink"], [out], lambd=0.0, bias=0.0))
    ex = Explainer.from_onnx(m, progress=False)
    with pytest.raises(BackendError, match=r"operator 'Shrink' \(opset \d+\)") as first:
        ex.explain(x, "gradcam")
    with pytest.raises(BackendError) as second:
        ex.explain(x, "gradcam++")
    assert second.value is first.value
    assert ex.explain(x, "scorecam").heatmap.shape == (1, SIZE, SIZE)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_opset20_gelu_reducemean18_reshape_allowzero(approximate, torch):
    """Conv -> Gelu (opset 20) -> ReduceMean-18 (axes as input) -> Reshape(allowzero=1): converted after
    legalize() and equal to ONNX Runtime on the original graph."""
    import onnxruntime as ort
    from onnx2torch import convert

    from agnostic_cam.adapters.onnx.legal import legalize

    rs = np.random.RandomState(0)
    inits = [numpy_helper.from_array(rs.randn(4, 3, 3, 3).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([1, 4], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Gelu", ["c"], ["g"], approximate=approximate),
             helper.make_node("ReduceMean", ["g", "axes"], ["r"], keepdims=1),
             helper.make_node("Reshape", ["r", "shape"], ["y"], allowzero=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model)
    xin = rs.randn(1, 3, 8, 8).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xin})[0]
    with pytest.raises(NotImplementedError):
        convert(model)  # what onnx2torch does with the graph as exported
    legal = legalize(model)
    assert legal.opset_import[0].version == 17 and "Gelu" not in {n.op_type for n in legal.graph.node}
    got = convert(legal)(torch.from_numpy(xin)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
