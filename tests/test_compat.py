"""agnostic_cam.compat: private APIs behind feature probes; "not installed" vs "incompatible"."""
from __future__ import annotations

import sys

import pytest

from agnostic_cam import compat
from agnostic_cam.errors import IncompatibleDependencyError, MissingDependencyError


def test_private_resolves_real_paths():
    import onnx.helper

    assert compat.private("onnx", "helper.make_node") is onnx.helper.make_node


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # an import of it fails, as when not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'agnostic-cam\[onnx-grad\]'"):
        compat.private("onnx2torch", "convert")


def test_moved_private_api_names_the_installed_and_tested_versions():
    import onnx

    with pytest.raises(IncompatibleDependencyError) as e:
        compat.private("onnx", "helper.no_such_function")
    msg = str(e.value)
    assert f"onnx {onnx.__version__} no longer provides `onnx.helper.no_such_function`" in msg
    with pytest.raises(IncompatibleDependencyError, match="torch .* up to 2.14.x"):
        compat.private("torch", "_C._no_such_module_here")
    assert not isinstance(e.value, MissingDependencyError) and isinstance(e.value, ImportError)


def test_torch_probes(torch, monkeypatch):
    out, inplace = compat.torch_relu_functions()
    assert torch.relu in out and torch._C._VariableFunctions.relu in out and torch.relu_ in inplace
    monkeypatch.setattr(torch._C, "_VariableFunctions", object())  # as a release whose namespace has no relu
    with pytest.raises(IncompatibleDependencyError, match="relu"):
        compat.torch_relu_functions()


def test_legacy_exporter_probe(torch):
    import io

    import onnx

    buf = io.BytesIO()
    compat.torch_onnx_export_legacy(torch.nn.Conv2d(3, 2, 3), (torch.zeros(1, 3, 8, 8),), buf, opset_version=13)
    m = onnx.load_from_string(buf.getvalue())
    assert [n.op_type for n in m.graph.node] == ["Conv"] and m.opset_import[0].version == 13
    assert compat.is_script_module(torch.jit.script(torch.nn.ReLU())) and not compat.is_script_module(torch.nn.ReLU())


def test_keras_and_tf2onnx_probes(torch, monkeypatch):
    import torch._dynamo  # noqa: F401 - loads triton, which segfaults when first loaded after TensorFlow
    import keras

    functional = compat.keras_functional()
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(inp))
    assert isinstance(model, functional)
    assert compat.keras_history_operation(model.outputs[0]).name == "d"
    seen = []
    compat.run_through_graph(model, [keras.ops.zeros((1, 4))], lambda op: (seen.append(op.name), op)[1])
    assert seen == ["d"]
    common, names = compat.tf2onnx_convert_common()
    assert callable(common) and callable(names)
    monkeypatch.setattr(functional, "_run_through_graph", None)  # as a Keras release that renamed it
    with pytest.raises(IncompatibleDependencyError, match=r"keras 3\.\S+ no longer provides `Functional._run_through_graph"):
        compat.keras_functional()
    with pytest.raises(IncompatibleDependencyError):
        compat.run_through_graph(model, [keras.ops.zeros((1, 4))], lambda op: op)
