"""The method contract: what a method needs, what it receives, and the shared CAM base.

A method is a small class registered by name. It declares what it ``needs``; the explainer
gathers exactly that into a :class:`~agnostic_cam.capture.Capture` (plain NumPy arrays plus forward
callables that run on ONNX Runtime), so one implementation serves every framework.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from agnostic_cam import layout as L
from agnostic_cam.capture import Capture, LayerCapture, Needs  # noqa: F401 - re-exported
from agnostic_cam.imaging import cam_to_heatmap
from agnostic_cam.methods.projection import first_component_projection
from agnostic_cam.errors import InputError, OptionError


class Method:
    """Base of every method. Subclasses set ``needs`` and implement :meth:`compute`."""

    name: ClassVar[str] = ""
    needs: ClassVar[Needs] = Needs.LAYER_GRADIENTS
    rule: ClassVar[str] = "vanilla"  # ReLU backward rule of the input gradients it needs
    scale: np.ndarray | None = None  # (N,) set by compute: magnitude of the map's terms (degenerate.py)

    def compute(self, cap: LayerCapture) -> np.ndarray:
        """The raw map, (N, h, w), before normalisation."""
        raise NotImplementedError

    def heatmap(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(N, H, W) float32 in [0, 1] from the raw map."""
        return cam_to_heatmap(raw, size)


class CamMethod(Method):
    """A CAM: ``cam = sum_c M_c`` over per-channel maps M (N, C, h, w), by default ``M_c = w_c * A_c``.

    Override :meth:`weights` (N, C), :meth:`maps` (N, C, h, w), or :meth:`compute` (then the
    method is already a projection and ``eigen_smooth`` leaves it as it is, as in pytorch-grad-cam).
    ``eigen_smooth`` (set by ``explain(eigen_smooth=True)``): the first principal component of M
    instead of its channel sum (pytorch-grad-cam's ``get_2d_projection``; the component's sign is
    chosen so it correlates positively with the channel sum).
    """

    eigen_smooth: bool = False

    def weights(self, cap: LayerCapture) -> np.ndarray:
        raise NotImplementedError

    def maps(self, cap: LayerCapture) -> np.ndarray:
        """Per-channel contributions (N, C, h, w) whose channel sum is the CAM."""
        w = np.asarray(self.weights(cap), dtype=np.float32)
        return w[:, :, None, None] * cap.activations

    def compute(self, cap: LayerCapture) -> np.ndarray:
        if not self.eigen_smooth and type(self).maps is CamMethod.maps:
            w = np.asarray(self.weights(cap), dtype=np.float32)
            ws = getattr(self, "weight_noise", None)  # (N, C) size of the weights' rounding, default |w|
            self.scale = term_scale(np.abs(w) if ws is None else ws, cap.activations)
            return np.einsum("nc,nchw->nhw", w, cap.activations, optimize=True)
        m = self.maps(cap)
        self.scale = (np.sqrt((m.astype(np.float64) ** 2).sum(axis=1)) if self.eigen_smooth
                      else np.abs(m).sum(axis=1)).reshape(m.shape[0], -1).max(axis=1)
        return first_component_projection(m) if self.eigen_smooth else m.sum(axis=1)


def term_scale(w_abs: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """(N,) magnitude of the terms of ``sum_c w_c A_c``: max over positions of ``sum_c |w_c| |A_c|``
    (what rounding errors of the map are proportional to; see :mod:`agnostic_cam.degenerate`)."""
    t = np.einsum("nc,nchw->nhw", np.asarray(w_abs, np.float64), np.abs(acts).astype(np.float64), optimize=True)
    return t.reshape(t.shape[0], -1).max(axis=1)


_REGISTRY: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a method available to ``Explainer.explain(method=name)``."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise InputError(f"a method named {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def registry() -> dict[str, type[Method]]:
    return dict(_REGISTRY)


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; a ``ValueError`` listing the known names otherwise."""
    if not isinstance(name, str):
        raise InputError(f"method must be a method name (str); got {type(name).__name__}")
    key = name.strip().lower()
    for k in (key, key.replace("-", "_"), key.replace("_", "-")):
        if k in _REGISTRY:
            return _REGISTRY[k]
    import difflib

    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise OptionError(f"unknown method {name!r}.{hint} Known methods: {', '.join(sorted(_REGISTRY))}")
