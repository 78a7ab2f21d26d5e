"""The library's error types: one small hierarchy, so callers can tell whose fault a failure is.

- :class:`InputError`: the caller passed something the library cannot use (images, targets,
  options). Fix the call. The audit treats these per image.
- :class:`ModelError`: the model cannot be explained as given (layer, layout, non-finite
  outputs, an export that fails). Fix the model or the explainer's settings.
- :class:`BackendError`: a dependency or runtime failed or is missing (ONNX Runtime, the gradient
  backend, an optional extra). Install or upgrade what it names.

Each also derives from the built-in exception that older code caught (``ValueError``,
``TypeError``, ``RuntimeError``, ``ImportError``), so ``except ValueError`` keeps working.
Anything else that escapes the library is a bug: please report it.
"""
from __future__ import annotations


class AgnosticCamError(Exception):
    """Base of every error the library raises on purpose."""


class InputError(AgnosticCamError, ValueError, TypeError):
    """Bad input from the caller: images, targets or options."""


class MissingFileError(InputError, FileNotFoundError):
    """A file the caller named (model, image, preprocessing file) does not exist."""


class OptionError(InputError):
    """A method or explainer option has an unusable value (e.g. ``batch_size=-1``)."""


class NonFiniteError(AgnosticCamError, ValueError):
    """NaN or Inf where a finite number is needed. ``where`` names the place (input, output, score...)."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where


class ModelError(AgnosticCamError, ValueError):
    """The model cannot be explained as given (layer, layout, output, export)."""


class LayoutError(ModelError):
    """A tensor's layout is ambiguous or unsupported; the message names the option that settles it."""


class BackendError(AgnosticCamError, RuntimeError):
    """A backend (ONNX Runtime, the gradient backend, a framework) failed or cannot do what was asked."""


class MissingDependencyError(BackendError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class IncompatibleDependencyError(BackendError, ImportError):
    """An installed dependency's version is not compatible; the message names the version that broke."""


__all__ = ["AgnosticCamError", "InputError", "MissingFileError", "OptionError", "NonFiniteError", "ModelError", "LayoutError",
           "BackendError", "MissingDependencyError", "IncompatibleDependencyError"]
