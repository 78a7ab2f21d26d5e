"""The method contract: what a method needs, what it receives, and the shared CAM base.

A method is a small class registered by name. It declares what it ``needs``; the explainer
gathers exactly that into a :class:`LayerCapture` (plain NumPy arrays plus forward callables
that run on ONNX Runtime), so one implementation serves every framework.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from agnostic_cam import layout as L
from agnostic_cam.imaging import cam_to_heatmap
from agnostic_cam.methods.projection import first_component_projection
from agnostic_cam.targets import select_scores
from agnostic_cam.errors import InputError, OptionError


class Needs(enum.Flag):
    """What a method needs from the adapter / engine."""

    ACTIVATIONS = enum.auto()       # layer activations (from the ONNX session)
    FORWARD = enum.auto()           # model outputs for new inputs (ONNX session)
    TAIL = enum.auto()              # model outputs for new layer activations (ONNX tail graph)
    LAYER_GRADIENTS = enum.auto()   # activations and d(score)/d(activations) (framework autograd)
    INPUT_GRADIENTS = enum.auto()   # d(score)/d(input) under a backward rule (framework autograd)
    HVP = enum.auto()               # activations, grads and the Hessian-vector product H A at the layer
    BIAS_GRADIENTS = enum.auto()    # every bias layer's bias and d(score)/d(its output), plus input grads

    @property
    def uses_gradients(self) -> bool:
        return bool(self & (Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS | Needs.HVP | Needs.BIAS_GRADIENTS))


@dataclass
class LayerCapture:
    """Everything a method may use, as NumPy arrays. Shapes:

    x (N, *input) in the model's layout; outputs (N, K); scores (N,);
    activations and grads (N, C, h, w) channel-first whatever the framework's layout.
    ``input_grad(inputs, image, rule)``: d(score)/d(input) (M, *input) in the model's layout for
    input rows (M, *input), row i scored for the target of image ``image[i]`` ((M,) ints; None:
    row i is image i), every ReLU under backward ``rule`` ('vanilla', 'guided', 'deconv').
    """

    x: np.ndarray
    layout: str
    outputs: np.ndarray
    scores: np.ndarray
    classes: np.ndarray | None
    target_fn: Callable | None
    activations: np.ndarray | None = None
    grads: np.ndarray | None = None
    forward: Callable[[np.ndarray], np.ndarray] | None = None
    tail: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    input_grad: Callable[[np.ndarray, np.ndarray | None, str], np.ndarray] | None = None
    batch_size: int = 32
    progress: bool | None = None
    extras: dict = field(default_factory=dict)
    hvp: np.ndarray | None = None   # (N, C, h, w) Hessian-vector product d/dA <dS/dA, A>
    bias_terms: list = field(default_factory=list)  # [(bias (C,), d(score)/d(layer output) (N, C, h, w))]

    spatial_axes: ClassVar[tuple[int, int]] = (2, 3)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the input images."""
        return L.spatial_size(self.x.shape, self.layout)

    def row_scores(self, outputs: np.ndarray, image: np.ndarray | int) -> np.ndarray:
        """Target scores (M,) of output rows (M, K) that belong to images ``image`` (int or (M,))."""
        idx = np.broadcast_to(np.asarray(image), (outputs.shape[0],))
        classes = None if self.classes is None else self.classes[idx]
        return select_scores(outputs, classes, self.target_fn)

    def masked_inputs(self, image: int, masks: np.ndarray) -> np.ndarray:
        """Image ``image`` multiplied by each of ``masks`` (M, H, W): (M, *input) in the model's layout."""
        xi = self.x[image][None]
        return xi * L.expand_mask(masks, self.layout)

    def progress_bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=(None if self.progress is None else not self.progress))


class Method:
    """Base of every method. Subclasses set ``needs`` and implement :meth:`compute`."""

    name: ClassVar[str] = ""
    needs: ClassVar[Needs] = Needs.LAYER_GRADIENTS
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
