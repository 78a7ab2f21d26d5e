"""The ``compare`` command's models: an ``.onnx`` file, a Keras file (``.keras`` / ``.h5``) or a
PyTorch / Keras model built by ``module:factory`` (``pkg.models:build`` or ``path/to/file.py:build``;
the factory is called with no argument and returns an ``nn.Module``, a Keras model or an Explainer).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
from pathlib import Path

from agnostic_cam.errors import MissingFileError, ModelError, OptionError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_FACTORY = re.compile(r"^(?P<mod>[^:]+):(?P<fn>[A-Za-z_][A-Za-z0-9_]*)$")


def kind_of(spec: str) -> str:
    """'onnx', 'keras' or 'factory' for a model argument; OptionError for anything else."""
    low = spec.lower()
    if low.endswith(".onnx"):
        return "onnx"
    if low.endswith(KERAS_SUFFIXES):
        return "keras"
    if _FACTORY.match(spec) and not os.path.exists(spec):
        return "factory"
    raise OptionError(f"model {spec!r}: give an .onnx file, a Keras file (.keras, .h5) or module:factory (a Python "
                      "function returning a torch.nn.Module or a Keras model, e.g. mypkg.models:build)")


def fingerprint(spec: str) -> str:
    """A hash of the model: its file (and an ONNX file's external weights), or for a factory the
    source file of its module (a changed factory recomputes every image)."""
    k = kind_of(spec)
    if k == "onnx":
        from agnostic_cam.audit.context import model_fingerprint

        return model_fingerprint(spec)
    if k == "keras":
        try:
            return hashlib.blake2b(Path(spec).read_bytes(), digest_size=16).hexdigest()
        except OSError as e:
            raise MissingFileError(f"cannot read the Keras model {spec}: {e.strerror or e}") from None
    mod = _FACTORY.match(spec).group("mod")
    src = mod if mod.endswith(".py") else getattr(importlib.util.find_spec(mod), "origin", None) or ""
    try:
        data = Path(src).read_bytes() if src else b""
    except OSError:
        data = b""
    return hashlib.blake2b(spec.encode() + data, digest_size=16).hexdigest()


def _factory(spec: str):
    m = _FACTORY.match(spec)
    mod, fn = m.group("mod"), m.group("fn")
    try:
        if mod.endswith(".py"):
            s = importlib.util.spec_from_file_location(Path(mod).stem, mod)
            if s is None or not Path(mod).is_file():
                raise MissingFileError(f"model {spec!r}: no Python file {mod}")
            module = importlib.util.module_from_spec(s)
            s.loader.exec_module(module)
        else:
            module = importlib.import_module(mod)
    except ImportError as e:
        raise OptionError(f"model {spec!r}: cannot import {mod} ({e}); is it on PYTHONPATH?") from None
    if not callable(getattr(module, fn, None)):
        raise OptionError(f"model {spec!r}: {mod} has no function {fn}")
    return getattr(module, fn)()


def load_explainer(spec: str, layer: str | None = None, providers=None):
    """An Explainer for one model argument (see the module's notes), at ``layer`` when given."""
    from agnostic_cam.explainer import Explainer

    k = kind_of(spec)
    if k == "onnx":
        if not Path(spec).is_file():
            raise MissingFileError(f"no ONNX file {spec}")
        return Explainer.from_onnx(spec, target_layer=layer, providers=providers, progress=False)
    if k == "keras":
        if not Path(spec).is_file():
            raise MissingFileError(f"no Keras file {spec}")
        import keras

        try:
            model = keras.models.load_model(spec, compile=False)
        except Exception as e:  # noqa: BLE001 - Keras raises many types for unreadable files
            raise ModelError(f"cannot load the Keras model {spec} ({type(e).__name__}: {e})") from None
        return Explainer.from_keras(model, layer, providers=providers, progress=False)
    obj = _factory(spec)
    if isinstance(obj, Explainer):
        return obj
    if type(obj).__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
        return Explainer.from_keras(obj, layer, providers=providers, progress=False)
    return Explainer.from_torch(obj, layer, providers=providers, progress=False)


def short_names(specs: list[str]) -> list[str]:
    """Display names for the models: file stems (factory names), repeats numbered."""
    out: list[str] = []
    for s in specs:
        base = s.split(":")[-1] if kind_of(s) == "factory" else Path(s).stem
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out
