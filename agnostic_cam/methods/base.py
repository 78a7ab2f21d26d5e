"""The method contract: what a method needs, what it receives, what the pipeline may ask of it.

A method is a small class registered by name. It declares what it ``needs``; the pipeline
(:mod:`agnostic_cam.core.run`) gathers exactly that into a :class:`~agnostic_cam.core.capture.Capture`
(plain NumPy arrays plus forward callables that run on ONNX Runtime or the framework's autograd), so
one implementation serves every framework. Everything the pipeline asks of a method is declared on
:class:`Method` with a default; the pipeline never probes a method for attributes.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from agnostic_cam.core.capture import Capture, Needs  # noqa: F401 - re-exported
from agnostic_cam.core.imaging import cam_to_heatmap
from agnostic_cam.errors import AgnosticCamError, InputError, OptionError
from agnostic_cam.methods.projection import first_component_projection

EXPLAIN_OPTIONS = ("aug_smooth", "eigen_smooth", "batch_size")  # taken by Explainer.explain for every method


class Method:
    """Base of every method. Subclasses set ``needs`` and implement :meth:`compute`.

    The contract, each with a default here:

    - ``needs`` (:class:`Needs`): what the capture must hold; checked against the adapter first.
    - ``rule``: the ReLU backward rule of the input gradients it needs ('vanilla', 'guided', 'deconv').
    - ``batch_size``: images (or masked inputs) per pass; ``explain(batch_size=...)`` sets it on
      every method, and methods that batch their own forward passes read it.
    - ``supports_eigen_smooth``: whether ``explain(eigen_smooth=True)`` applies (CAM methods).
    - ``layers_combine``: how maps of several target layers combine, ``"mean"`` (pytorch-grad-cam's
      rule) or ``"product"`` (RefineCAM).
    - :meth:`target_for`: the target actually explained (default: the user's, unchanged).
    - ``runs_explanations`` and :meth:`explain_with`: a meta-method that runs other explanations
      itself (SESS) instead of computing a map from one capture.
    - :meth:`compute` (the raw map) and :meth:`heatmap` (its normalised, resized form).
    - ``scale``: set by :meth:`compute`, the magnitude of the map's terms (see
      :mod:`agnostic_cam.core.degenerate`); None when unknown.
    - ``volumes``: whether it explains volumes and clips (N, C, D, H, W): its formula is written
      over every spatial axis (``cap.spatial_axes``). Others get a typed error naming those that do.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[Needs] = Needs.LAYER_GRADIENTS
    rule: ClassVar[str] = "vanilla"
    supports_eigen_smooth: ClassVar[bool] = False
    layers_combine: ClassVar[str] = "mean"
    runs_explanations: ClassVar[bool] = False
    volumes: ClassVar[bool] = False
    detection_only: ClassVar[bool] = False  # explains a detector's boxes only (a DetectionBoxes target): not in ex.methods
    batch_size: int | None = None
    eigen_smooth: bool = False
    scale: np.ndarray | None = None
    attention: Any = None             # attention methods: the blocks to read (None: all)
    prefix_tokens: int | None = None  # attention methods: leading non-patch tokens (None: worked out)

    @classmethod
    def create(cls, options: dict[str, Any], batch_size: int | None = None, eigen_smooth: bool = False) -> Method:
        """The method built from ``explain()``'s options, with the two options every method takes set.

        A bad option value keeps its own message; an unknown option name gets one that lists what
        the method takes (with close matches)."""
        try:
            m = cls(**options)
        except AgnosticCamError:  # a bad option value (InputError is also a TypeError): keep its message
            raise
        except TypeError:
            raise OptionError(unknown_option_message(cls, options)) from None
        if batch_size is not None:  # validated by core.options.check_options
            m.batch_size = batch_size
        if eigen_smooth:
            if not m.supports_eigen_smooth:
                raise OptionError(f"eigen_smooth applies to CAM methods (a weighted sum of layer channels); "
                                  f"{cls.name!r} is not one. Use aug_smooth, or a CAM such as 'gradcam'")
            m.eigen_smooth = True
        return m

    @property
    def uses_layer(self) -> bool:
        """Whether the map is read at the target layer (pixel-space and layer-free methods: False)."""
        return self.needs.uses_layer

    def target_for(self, predict: Callable[[], np.ndarray], target: Any) -> Any:
        """The target to explain, given the user's ``target``; ``predict()`` gives the model's
        outputs (N, K) for the batch when a method needs them (Finer-CAM). Default: ``target``."""
        return target

    def explain_with(self, explainer: Any, x: np.ndarray, target: Any) -> tuple:
        """For ``runs_explanations`` methods: (maps (N, H, W) in [0, 1], classes, scores, outputs)."""
        raise NotImplementedError(f"{type(self).__name__} computes from a capture; it does not run explanations")

    def compute(self, cap: Capture) -> np.ndarray:
        """The raw map, (N, h, w), before normalisation ((N, d, h, w) for volumes)."""
        raise NotImplementedError

    def heatmap(self, raw: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """(N, H, W) float32 in [0, 1] from the raw map ((N, D, H, W) for volumes: ``size`` (D, H, W))."""
        return cam_to_heatmap(raw, size)


class AttentionMethod(Method):
    """Base of the methods read from attention probabilities (``cap.attention``, an
    :class:`~agnostic_cam.core.attention.AttentionCapture`). Options every one takes:
    ``attention``: the blocks to read, a list of names from ``ex.layers(kind='attention')`` or block
    indices (None: every block); ``prefix_tokens``: how many leading tokens are not patches (class,
    distillation, register tokens; None: worked out, a LayoutError asks when ambiguous)."""

    needs = Needs.ATTENTION

    def __init__(self, attention=None, prefix_tokens: int | None = None):
        if prefix_tokens is not None and (isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int)
                                          or prefix_tokens < 0):
            raise InputError(f"prefix_tokens must be a non-negative int or None; got {prefix_tokens!r}")
        self.attention, self.prefix_tokens = attention, prefix_tokens


class CamMethod(Method):
    """A CAM: ``cam = sum_c M_c`` over per-channel maps M (N, C, h, w), by default ``M_c = w_c * A_c``.

    Override :meth:`weights` (N, C), :meth:`maps` (N, C, h, w), or :meth:`compute` (then the
    method is already a projection and ``eigen_smooth`` leaves it as it is, as in pytorch-grad-cam).
    ``eigen_smooth`` (set by ``explain(eigen_smooth=True)``): the first principal component of M
    instead of its channel sum (pytorch-grad-cam's ``get_2d_projection``; the component's sign is
    chosen so it correlates positively with the channel sum). ``weight_noise`` (N, C), where a
    method sets it: the size of its weights' rounding (default ``|w|``), for the degenerate check.
    """

    supports_eigen_smooth = True
    weight_noise: np.ndarray | None = None

    def weights(self, cap: Capture) -> np.ndarray:
        raise NotImplementedError

    def maps(self, cap: Capture) -> np.ndarray:
        """Per-channel contributions (N, C, h, w) whose channel sum is the CAM ((N, C, d, h, w) volumes)."""
        w = np.asarray(self.weights(cap), dtype=np.float32)
        return w.reshape(w.shape + (1,) * (cap.activations.ndim - 2)) * cap.activations

    def compute(self, cap: Capture) -> np.ndarray:
        if not self.eigen_smooth and type(self).maps is CamMethod.maps:
            w = np.asarray(self.weights(cap), dtype=np.float32)
            ws = self.weight_noise
            self.scale = term_scale(np.abs(w) if ws is None else ws, cap.activations)
            return np.einsum(_SUM[cap.activations.ndim], w, cap.activations, optimize=True)
        m = self.maps(cap)
        self.scale = (np.sqrt((m.astype(np.float64) ** 2).sum(axis=1)) if self.eigen_smooth
                      else np.abs(m).sum(axis=1)).reshape(m.shape[0], -1).max(axis=1)
        return first_component_projection(m) if self.eigen_smooth else m.sum(axis=1)


def term_scale(w_abs: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """(N,) magnitude of the terms of ``sum_c w_c A_c``: max over positions of ``sum_c |w_c| |A_c|``
    (what rounding errors of the map are proportional to; see :mod:`agnostic_cam.core.degenerate`)."""
    t = np.einsum(_SUM[acts.ndim], np.asarray(w_abs, np.float64), np.abs(acts).astype(np.float64), optimize=True)
    return t.reshape(t.shape[0], -1).max(axis=1)


_SUM = {4: "nc,nchw->nhw", 5: "nc,ncdhw->ndhw"}  # sum_c w_c A_c over images (N, C, h, w) or volumes


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

    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise OptionError(f"unknown method {name!r}.{hint} Known methods: {', '.join(sorted(_REGISTRY))}")


def method_options(mcls: type[Method]) -> list[str]:
    """Named keyword options of ``mcls`` (its ``__init__`` up the class chain, ``*args``/``**kwargs``
    left out), plus those of the CAM a guided method wraps (``mcls.cam``)."""
    names: list[str] = []
    for klass in mcls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                names.append(p.name)
        break  # the first __init__ found is the one that runs
    inner = getattr(mcls, "cam", "")  # guided methods name the CAM they wrap (a class attribute)
    if isinstance(inner, str) and inner:
        names += [n for n in method_options(get_method(inner)) if n not in names]
    return names


def unknown_option_message(mcls: type[Method], options: dict) -> str:
    """``method 'gradcam' got unknown option(s) ['batchsize']; it takes: ...`` with close matches."""
    own = method_options(mcls)
    valid = own + [o for o in EXPLAIN_OPTIONS if o not in own]
    unknown = sorted(k for k in options if k not in valid) or sorted(options)
    close = {k: difflib.get_close_matches(k, valid, n=1, cutoff=0.6) for k in unknown}
    hint = "".join(f" Did you mean {c[0]!r} for {k!r}?" for k, c in close.items() if c)
    takes = ", ".join(valid)
    return f"method {mcls.name!r} got unknown option(s) {unknown}; it takes: {takes}.{hint}"
