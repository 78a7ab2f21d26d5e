"""Every private API of a dependency that agnostic-cam uses, behind feature probes.

Keras has no hooks, tf2onnx has no public "convert a frozen graph without optimizers", PyTorch
routes ``torch.relu`` through ``torch._C`` and will drop its legacy (TorchScript) ONNX exporter.
Those internals move between releases. Each is reached here only, so that a release that moves
one gives a clear :class:`~agnostic_cam.errors.IncompatibleDependencyError` naming the package,
the installed version and the newest version the tests cover, instead of an ``AttributeError``
deep in a traceback or a misleading "pip install" hint. A package that is not installed at all
gives :class:`~agnostic_cam.errors.MissingDependencyError` naming the extra to install.

``TESTED`` lists the newest release line of each package the test suite covers (the upper bounds
in ``pyproject.toml``); ``make test-latest`` runs the suite against the newest releases.
Nothing is imported at module import time.
"""
from __future__ import annotations

import importlib
import inspect
from importlib import metadata

from agnostic_cam.errors import IncompatibleDependencyError, MissingDependencyError

# package import name -> (distribution name, newest release line the tests cover, extra)
TESTED = {
    "keras": ("keras", "3.15", "keras"),
    "tensorflow": ("tensorflow-cpu", "2.21", "keras"),
    "tf2onnx": ("tf2onnx", "1.17", "keras"),
    "torch": ("torch", "2.14", "torch"),
    "onnx2torch": ("onnx2torch", "1.5", "onnx-grad"),
}


def version(package: str) -> str:
    """Installed version of ``package`` (import name), or 'unknown'."""
    dist = TESTED.get(package, (package,))[0]
    for name in (dist, package, dist.replace("-cpu", "")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    mod = importlib.import_module(package)
    return getattr(mod, "__version__", "unknown")


def _extra(package: str) -> str:
    extra = TESTED.get(package, (package, "", package))[2]
    return f"pip install 'agnostic-cam[{extra}]'"


def require(package: str):
    """Import ``package`` or raise MissingDependencyError naming the extra that installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise MissingDependencyError(f"{package} is not installed ({e}): {_extra(package)}") from None


def incompatible(package: str, what: str, why: str = "") -> IncompatibleDependencyError:
    """The error for a private API ``what`` of ``package`` that the installed release no longer has."""
    tested = TESTED.get(package, (package, "?", package))[1]
    return IncompatibleDependencyError(
        f"{package} {version(package)} no longer provides {what}{f' ({why})' if why else ''}, which agnostic-cam "
        f"uses; the tests cover {package} up to {tested}.x. Install a covered release "
        f"(pip install '{TESTED.get(package, (package,))[0]}<={tested}.*') or a newer agnostic-cam")


def private(package: str, path: str):
    """The object at dotted ``path`` inside ``package`` ('src.models.functional.Functional' of 'keras').

    Modules along the path are imported as needed. MissingDependencyError when ``package`` itself
    is not installed; IncompatibleDependencyError when it is but ``path`` is not there.
    """
    obj = require(package)
    name = package
    for part in path.split("."):
        name = f"{name}.{part}"
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(name)
        except ImportError as e:
            raise incompatible(package, f"`{name}`", str(e)) from None
    return obj


# -- Keras ---------------------------------------------------------------------------------------
def keras_functional() -> type:
    """``keras.src.models.functional.Functional`` (the class of functional models), probed for the
    ``_run_through_graph`` method the Keras adapter evaluates graphs with."""
    cls = private("keras", "src.models.functional.Functional")
    if not callable(getattr(cls, "_run_through_graph", None)):
        raise incompatible("keras", "`Functional._run_through_graph`")
    return cls


def run_through_graph(model, inputs: list, operation_fn):
    """``model._run_through_graph(inputs, operation_fn=...)``: evaluate a functional model's graph
    with our own callable per operation (taps, backward rules, logits)."""
    fn = getattr(model, "_run_through_graph", None)
    if fn is None or "operation_fn" not in inspect.signature(fn).parameters:
        raise incompatible("keras", "`Functional._run_through_graph(inputs, operation_fn=...)`")
    return fn(inputs, operation_fn=operation_fn)


def keras_history_operation(tensor):
    """The operation (layer) that produced a symbolic Keras tensor: ``tensor._keras_history[0]``."""
    hist = getattr(tensor, "_keras_history", None)
    if hist is None or not len(hist):
        raise incompatible("keras", "`KerasTensor._keras_history`")
    return hist[0]


# -- tf2onnx -------------------------------------------------------------------------------------
def tf2onnx_convert_common():
    """``tf2onnx.convert._convert_common`` (the converter of a frozen graph that takes ``optimizers=``),
    and ``tf2onnx.convert.tensor_names_from_structed``."""
    common = private("tf2onnx", "convert._convert_common")
    params = inspect.signature(common).parameters
    anything = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # passed on to process_tf_graph
    missing = [p for p in ("optimizers", "tensors_to_rename", "input_names", "output_names")
               if p not in params and (p == "optimizers" or not anything)]
    if missing:
        raise incompatible("tf2onnx", "`convert._convert_common` with the arguments " + ", ".join(missing))
    return common, private("tf2onnx", "convert.tensor_names_from_structed")


# -- PyTorch -------------------------------------------------------------------------------------
def torch_relu_functions() -> tuple[set, set]:
    """(out-of-place, in-place) functions through which PyTorch code applies a ReLU, including the
    ``torch._C._VariableFunctions`` entries that ``torch.relu`` dispatches to."""
    torch = require("torch")
    import torch.nn.functional as F

    vf = private("torch", "_C._VariableFunctions")
    if not (hasattr(vf, "relu") and hasattr(vf, "relu_")):
        raise incompatible("torch", "`torch._C._VariableFunctions.relu` / `relu_`")
    return {torch.relu, torch.Tensor.relu, vf.relu}, {torch.relu_, torch.Tensor.relu_, vf.relu_, F.relu_}


def torch_onnx_export_legacy(module, args: tuple, f, **kwargs) -> None:
    """``torch.onnx.export`` with the TorchScript-based (legacy) exporter: ``dynamo=False`` where the
    argument exists (torch >= 2.5; before, the legacy exporter was the only one)."""
    torch = require("torch")
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" in params:
        kwargs["dynamo"] = False
    try:
        torch.onnx.export(module, args, f, **kwargs)
    except (TypeError, NotImplementedError) as e:
        if "dynamo" in str(e) or "TorchScript" in str(e):
            raise incompatible("torch", "the legacy (TorchScript) ONNX exporter, torch.onnx.export(dynamo=False)",
                               str(e)[:200]) from None
        raise


def is_script_module(obj) -> bool:
    """True for ``torch.jit.trace`` / ``torch.jit.script`` results (checked without importing torch)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.jit.ScriptModule)


__all__ = ["TESTED", "version", "require", "incompatible", "private", "keras_functional", "run_through_graph",
           "keras_history_operation", "tf2onnx_convert_common", "torch_relu_functions", "torch_onnx_export_legacy",
           "is_script_module"]
