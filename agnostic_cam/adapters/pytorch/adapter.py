"""PyTorch adapter. The only module besides the other adapters that imports torch (lazily)."""
from __future__ import annotations

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.adapters.base import ACTIVATION, NATIVE, Adapter, Gradients, closest_names
from agnostic_cam.core.capture import Needs
from agnostic_cam.targets import TargetSpec
from agnostic_cam.core.concurrency import serialised
from agnostic_cam.errors import BackendError, InputError, LayoutError, MissingDependencyError, ModelError, OptionError

try:
    import torch
    from torch import nn

    from agnostic_cam.adapters.pytorch.checks import check_model, fingerprint, forward_failure
    from agnostic_cam.adapters.pytorch.eager import torch_forward
    from agnostic_cam.adapters.pytorch.export import TorchExport
    from agnostic_cam.adapters.pytorch.higher import TorchHigherOrder
    from agnostic_cam.adapters.pytorch.front import TorchFront
    from agnostic_cam.adapters.pytorch.layers import candidates, probe
    from agnostic_cam.adapters.pytorch.primitives import TorchPrimitives, hooked, layout_view, preserved, target_scores
except ImportError as e:  # pragma: no cover - exercised by test_import with torch blocked
    raise MissingDependencyError("Explainer.from_torch needs PyTorch: pip install 'agnostic-cam[torch]'") from e


class TorchAdapter(TorchFront, TorchExport, TorchHigherOrder, TorchPrimitives, Adapter):
    framework = "torch"
    supports = Adapter.supports | Needs.INPUT_GRADIENTS | Needs.HVP | Needs.BIAS_GRADIENTS
    layout = "NCHW"
    activation_layout = "NCHW"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None, input_shape: tuple[int, ...] | None = None,
                 output: str | int = "raw", providers=None, batch_size: int | None = None, layer_layout=None,
                 reshape=None):
        super().__init__(providers, batch_size)
        if reshape is not None and not callable(reshape):
            raise OptionError(f"reshape must be a function (N, ...) -> (N, C, h, w) of torch tensors; got {type(reshape).__name__}")
        if reshape is not None and layer_layout is not None:
            raise OptionError("pass either layer_layout= or reshape=, not both: reshape= already says how to read the layer")
        self.layer_layout_given = L.as_layer_layout(layer_layout)
        self.reshape = reshape
        self.layer_layout: L.LayerLayout | None = None  # the target tensor's layout, known after check_layer
        if not isinstance(model, nn.Module):
            raise InputError(f"from_torch expects a torch.nn.Module; got {type(model).__name__}")
        check_model(model)
        self.model = model
        self._check_output_option(output)
        self.output = output
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        if self.input_shape is not None and len(self.input_shape) not in (3, 4):
            raise InputError(f"input_shape is the shape of one image (C, H, W) or volume (C, D, H, W); got "
                             f"{self.input_shape}")
        auto = target_layer is None
        self._no_layer = ""  # why there is no target layer (auto pick failed), for require_layer
        if auto:
            try:
                target_layer = self._auto_layer(self.input_shape)
            except OptionError:
                raise
            except ModelError as e:  # no spatial layer (or no known input size yet): layer-free methods still run
                self._no_layer = str(e)
        if target_layer is None:
            self.layer_name = self.layer = self.activation_name = None
        else:
            self.layer_name, self.layer = self._resolve(target_layer)
        if self.input_shape is not None and not auto:  # an automatic pick is spatial at this shape already
            self.check_layer(self.input_shape)
        elif self._seen_output is None:
            self._early_output_check()
        if self.input_shape is not None:
            self.engine(self.input_shape)  # exportable? (else warn now, once, and use the fallback)

    # -- layer resolution ----------------------------------------------------------------------
    def _resolve(self, target_layer) -> tuple[str, nn.Module]:
        named = dict(self.model.named_modules())
        if isinstance(target_layer, nn.Module):
            for name, m in named.items():
                if m is target_layer:
                    return name or "<model>", m
            raise InputError("target_layer is a module that is not part of the model; pass one of model's "
                             "submodules or its dotted name, e.g. 'layer4'")
        if not isinstance(target_layer, str):
            raise InputError(f"target_layer must be a dotted module name or the module itself; got {type(target_layer).__name__}")
        if target_layer not in named or target_layer == "":
            names = [n for n in named if n]
            raise InputError(f"model has no layer named {target_layer!r}; closest names: {closest_names(target_layer, names)}")
        return target_layer, named[target_layer]

    def probe(self, sample_shape: tuple[int, ...]):
        """One forward pass of a zero image recording every module's output shape (model unchanged)."""
        with preserved(self.model):
            try:
                return probe(self.model, self._tensor(np.zeros((1, *sample_shape), np.float32)))
            except Exception as e:  # noqa: BLE001
                err = forward_failure(e, (1, *sample_shape), self.channels)
                raise InputError(f"{err} Check input_shape (C, H, W)") from None

    def layers(self, sample_shape: tuple[int, ...] | None = None) -> list[L.Candidate]:
        """Candidate target layers (name, module type, shape, layout) for images of ``sample_shape``."""
        shape = sample_shape or self.input_shape or self._last_shape
        if shape is None:
            raise OptionError("listing layers needs the input size: pass input_shape=(C, H, W) to from_torch")
        return candidates(self.probe(tuple(shape)))

    _last_shape = None

    def check_layer(self, sample_shape: tuple[int, ...]) -> None:
        """Run one zero image; resolve the target layer's layout and check it is a spatial map. A
        failed check forgets the size, so the next call at that size checks again (never explains
        with an unresolved layout)."""
        try:
            self._check_layer_at(sample_shape)
        except Exception:
            self._last_shape = None
            raise

    def _check_layer_at(self, sample_shape: tuple[int, ...]) -> None:
        p = self.probe(sample_shape)
        self._last_shape = tuple(sample_shape)
        self._check_output(p.output)
        if self.layer is None:
            return
        listing = [c.name for c in candidates(p) if c.layout is not None]
        examples = f"; candidate layers (ex.layers()): {', '.join(repr(s) for s in listing[-4:])}" if listing else ""
        got = p.shapes.get(self.layer_name)
        if got is None:
            raise ModelError(f"layer {self.layer_name!r} returns no tensor (or is never called), not a spatial map"
                             f"{examples}")
        self._check_input_dependent(p, sample_shape, examples)
        if self.reshape is not None:
            with torch.no_grad():
                chw = self._apply_reshape(torch.zeros(got))
            self._reshape_shapes = (tuple(got), tuple(chw.shape))
            self._check_activation(tuple(chw.shape), listing, sample_shape, examples)
            return
        try:
            self.layer_layout = p.layout(self.layer_name, self.layer_layout_given)
        except LayoutError as e:
            raise LayoutError(f"{e}{examples}") from None
        self._check_activation(self.layer_layout.chw_shape(got), listing, sample_shape, examples)

    def _apply_reshape(self, t):
        out = self.reshape(t)
        if not isinstance(out, torch.Tensor) or out.ndim not in (4, 5):
            raise ModelError(f"reshape= must return a (N, C, h, w) tensor; for an input of shape {tuple(t.shape)} it "
                             f"returned {getattr(out, 'shape', type(out).__name__)}")
        return out

    def to_chw(self, t):
        """The target layer's tensor (torch) as (N, C, h, w): reshape= or the layer layout, traceable."""
        if self.reshape is not None:
            return self._apply_reshape(t)
        return layout_view(t, self.layer_layout)

    def eager_view(self, native: np.ndarray) -> np.ndarray:
        """The export's ACTIVATION for the layer's own tensor (export fallback): (N, C, h, w)."""
        with torch.no_grad():
            return self.to_chw(torch.from_numpy(np.ascontiguousarray(native))).numpy()

    @property
    def native_layout(self) -> L.LayerLayout | None:
        return None if self.reshape is not None else (self.layer_layout or L.LayerLayout(L.NCHW))

    @property
    def native_name(self) -> str:
        plain = self.reshape is None and (self.layer_layout is None or self.layer_layout.kind in L.CHANNELS_FIRST)
        return ACTIVATION if plain else NATIVE

    def require_layer(self, method: str = "", sample_shape: tuple[int, ...] | None = None) -> None:
        """Without a target layer, try the automatic pick again at the images' own shape (the guessed
        224 px shape may not fit the model); then the base class's clear error if there is none."""
        if self.layer is None and sample_shape is not None and self._no_layer:
            try:
                name = self._auto_layer(tuple(sample_shape))
            except ModelError as e:
                self._no_layer = str(e)
            else:
                self.layer_name, self.layer = self._resolve(name)
                self.activation_name, self._no_layer = ACTIVATION, ""
                self._engines.clear()  # exported without the layer's activation
        super().require_layer(method, sample_shape)

    def _check_activation(self, got: tuple | None, spatial: list[str] | None = None, sample_shape=None,
                          examples: str = "") -> None:
        """A target layer must give (N, C, h, w) (volumes: (N, C, d, h, w)) with more than one position."""
        if got is None or len(got) not in (4, 5):
            what = f"outputs shape {got}" if got else "returns no tensor (or is never called)"
            raise ModelError(f"layer {self.layer_name!r} {what}, not a spatial (N, C, h, w) map{examples}")
        if int(np.prod(got[2:])) <= 1:
            raise ModelError(f"layer {self.layer_name!r} outputs shape {got}: a 1x1 map has no spatial extent to "
                             f"explain. Use larger input images than {sample_shape or 'these'} or an earlier layer"
                             f"{examples}")

    # -- helpers -------------------------------------------------------------------------------
    @property
    def channels(self) -> int | None:
        return self.input_shape[0] if self.input_shape else None

    @property
    def sample_shape(self) -> tuple | None:
        return self.input_shape or self._last_shape

    @property
    def input_rank(self) -> int | None:
        return len(self.input_shape) + 1 if self.input_shape else None

    def _param(self):
        return next(self.model.parameters(), None)

    def _tensor(self, x: np.ndarray, requires_grad: bool = False):
        p = self._param()
        t = torch.from_numpy(np.ascontiguousarray(x))
        if p is not None:
            t = t.to(device=p.device, dtype=p.dtype)
        return t.requires_grad_(requires_grad)

    def weights_version(self) -> object:
        """A fingerprint of every parameter and buffer (storage, version counter, sums and a strided
        sample of the values; see :func:`~agnostic_cam.adapters.pytorch.checks.fingerprint`): any
        optimiser step, load_state_dict, BN statistics update or in-place ``.data`` edit changes it.
        Raises NonFiniteError when a weight is NaN or Inf."""
        return fingerprint(self.model)

    # -- ONNX export: TorchExport (adapters/pytorch/export.py) ---------------------------------
    eager_forward = torch_forward  # (x, replace) -> (output, activation): the fallback's forward passes

    # -- gradients -----------------------------------------------------------------------------
    def _guard(self):
        if torch.is_inference_mode_enabled():
            raise BackendError("cannot explain inside torch.inference_mode(): gradient methods need autograd. "
                               "Call explain() outside the inference_mode block")

    def _ensure_layout(self, sample_shape: tuple[int, ...]) -> None:
        """The layer's layout depends on the input size (token grids): resolve it once per size."""
        if self._last_shape != tuple(sample_shape):
            self.check_layer(tuple(sample_shape))

    @serialised
    def layer_gradients(self, x: np.ndarray, target: TargetSpec) -> Gradients:
        self._guard()
        self._ensure_layout(x.shape[1:])
        store = []

        def keep(module, inputs, out):
            if not isinstance(out, torch.Tensor):
                return None
            store.append(out)
            return out.clone()  # later in-place ops (ReLU(inplace=True)) must not alter what we keep

        with preserved(self.model), torch.enable_grad(), hooked(self.layer, keep):
            xt = self._tensor(x, requires_grad=True)
            out = self._forward(xt)
            if not store:
                self._check_activation(None)
            act = store[-1]
            classes = target.indices(out.detach().cpu().float().numpy())
            scores = self._scores(out, classes, target)
            (grad,) = torch.autograd.grad(scores.sum(), act)
            with torch.no_grad():  # the same reshape for activations and gradients (pytorch-grad-cam's rule)
                act, grad = self.to_chw(act.detach()), self.to_chw(grad)
            self._check_activation(tuple(act.shape))
            return Gradients(
                outputs=out.detach().cpu().float().numpy(),
                scores=scores.detach().cpu().double().numpy(),
                classes=classes,
                activations=act.detach().cpu().float().numpy(),
                grads=grad.detach().cpu().float().numpy(),
            )

    _scores = staticmethod(target_scores)
