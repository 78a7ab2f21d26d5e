"""Adapter for a bare ONNX model (a file, its bytes or a ModelProto): no framework needed.

Forward-only methods (Score-CAM, Ablation-CAM, Eigen-CAM, CAM) run on ONNX Runtime. Gradient
methods need the optional gradient backend (``onnx2torch``, extra ``onnx-grad``), which converts
the graph to PyTorch on first use; see :mod:`agnostic_cam.adapters.onnx.torch_gradients`.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import onnx

from agnostic_cam.core import layout as L
from agnostic_cam.core import layout_detect as LD
from agnostic_cam.adapters.base import Adapter, Gradients, closest_names
from agnostic_cam.adapters.onnx.features import OnnxFeaturePrimitives
from agnostic_cam.adapters.onnx.graph_io import OnnxGraphIO
from agnostic_cam.adapters.onnx.layers import Layer, candidate_layers, chw_view, detect_layout, pick_layer, token_layers
from agnostic_cam.adapters.onnx.legal import opset as legal_opset
from agnostic_cam.adapters.onnx.twin import agreement, float_twin, precision
from agnostic_cam.engine import graph as G
from agnostic_cam.engine.session import check_run_bytes, load_model
from agnostic_cam.errors import BackendError, InputError, LayoutError, MissingDependencyError, ModelError, OptionError
from agnostic_cam.core.capture import Needs
from agnostic_cam.targets import TargetSpec

GRAD_EXTRA = "pip install 'agnostic-cam[onnx-grad]'"
FORWARD_ONLY = Needs.ACTIVATIONS | Needs.FORWARD | Needs.TAIL | Needs.ATTENTION
GRADIENT_NEEDS = (Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS | Needs.HVP | Needs.BIAS_GRADIENTS
                  | Needs.ATTENTION_GRADIENTS | Needs.BLOCK_GRADIENTS)
CHW_VIEW = "agnostic_cam_chw"  # the target tensor as (N, C, h, w), computed in the exported graph


def refuse_reshape(reshape) -> None:
    """``from_onnx(reshape=...)``: an OptionError that says what to pass instead (nothing when None)."""
    if reshape is None:
        return
    raise OptionError(
        "from_onnx cannot take reshape=: forward methods (Score-CAM, Ablation-CAM, Eigen-CAM) run the graph on "
        "ONNX Runtime, where a Python function cannot run, and ablating a channel needs the reshape inside the "
        "graph. Say how the target tensor holds its channels instead: layer_layout='tokens' for (N, T, C) tokens "
        "(class/register tokens and the patch grid are worked out; or LayerLayout('tokens', prefix=1, grid=(h, w)) "
        "from agnostic_cam.core.layout), 'NHWC' for channels-last (N, h, w, C) maps (Swin), 'NCHW' otherwise. For any "
        "other reshape, explain the PyTorch model: Explainer.from_torch(model, layer, reshape=f)")


def gradient_backend_available() -> bool:
    """True when torch and onnx2torch are installed (checked without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx2torch"))


class OnnxAdapter(OnnxGraphIO, OnnxFeaturePrimitives, Adapter):
    """Explains one tensor of an ONNX graph.

    model: path, serialized bytes or ``onnx.ModelProto``.
    target_layer: a tensor name (see :meth:`layers`) or a node name; None picks the last main-path
        feature map before the head, by the rule all frameworks share (:mod:`~agnostic_cam.adapters.auto_layer`;
        ``self.picked`` and ``describe()`` then say so).
    layout: 'NCHW' or 'NHWC' for the model input; None detects it from the input shape.
    output: None (the first graph output), the name of a graph output, 'raw' (same as None),
        or 'logits' (the input of a final Softmax of the first output; a graph output that is
        itself named 'logits' takes precedence); 'logits:NAME' for the input of the Softmax
        producing output NAME.
    input_name: which graph input takes the image (needed when there are several).
    gradients: None uses the gradient backend when installed, False never, True requires it.
    """

    framework = "onnx"
    layer_reason = ""  # why the target layer is the one it is (automatic pick), for describe()

    def __init__(self, model, target_layer: str | None = None, layout: str | None = None, output: str | None = None,
                 input_name: str | None = None, providers=None, batch_size: int | None = None,
                 gradients: bool | None = None, layer_layout=None):
        super().__init__(providers, batch_size)
        self.layer_layout_given = L.as_layer_layout(layer_layout)
        if not isinstance(model, (onnx.ModelProto, bytes, bytearray, str, os.PathLike)):
            raise InputError(f"from_onnx takes a path, the model's bytes or an onnx.ModelProto; got {type(model).__name__}")
        self.model = G.topologically_sorted(load_model(model))
        self._check_opset()
        self.input_name = self._resolve_input(input_name)
        self.input_shape = self._declared_input_shape()
        fixed = self.input_shape[0] if isinstance(self.input_shape[0], int) and self.input_shape[0] > 0 else 1
        check_run_bytes(fixed, self.input_shape[1:], f"input {self.input_name!r} of shape {self.input_shape}")
        if layout is None:
            self.layout = detect_layout(self.input_shape, self.model, self.input_name)
            self.layout_detected = True
        elif isinstance(layout, str) and layout.upper() in ("NCHW", "NHWC"):
            self.layout, self.layout_detected = layout.upper(), False
        else:
            raise OptionError(f"layout must be 'NCHW', 'NHWC' or None (detect from the input shape); got {layout!r}")
        self.output_name, self.output_kind = self._resolve_output(output)
        self.candidates = self.layers()
        self.layer = self._resolve_layer(target_layer)
        self.picked = target_layer is None
        if self.layer is None:  # no spatial tensor: layer-free methods only
            self.layer_name = self.activation_name = None
            self._no_layer = ("the graph has no feature map or token tensor between the input and the output whose "
                              "layout can be told; name one with target_layer= and say how it holds its channels "
                              "with layer_layout='NCHW', 'NHWC' or 'tokens'" if not self.candidates
                              else "every feature map of this graph is 1x1 for its declared input size")
        else:
            self.layer_name = self.layer.name
            self.layer_layout = self.layer.lay
            if self.layer.lay.kind == L.TOKENS:  # the channel-first view is computed inside the exported graph
                self.activation_name, self.activation_layout = CHW_VIEW, L.NCHW
            else:
                self.activation_name, self.activation_layout = self.layer.name, self.layer.layout
        self._use_grad = self._gradient_choice(gradients)
        self.supports = FORWARD_ONLY | (GRADIENT_NEEDS if self._use_grad else Needs(0))
        self.gradient_hint = "" if self._use_grad else (
            f"gradients of a bare ONNX model need the gradient backend (torch + onnx2torch): {GRAD_EXTRA}")
        self.precision = precision(self.model)
        self.twin_report: dict | None = None  # filled by the first gradient call on an fp16 / int8 graph
        self._grad = None
        self._grad_error: Exception | None = None  # a failed conversion is kept: raised again, not retried
        self._act_engines: dict[tuple[str, ...], object] = {}

    # -- graph reading -------------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        """Candidate target layers: rank-4 and token tensors computed from the image that the output
        depends on, without per-head attention tensors (worked out once per explainer)."""
        if getattr(self, "candidates", None) is not None:
            return list(self.candidates)
        sample = tuple(d if isinstance(d, int) and d > 0 else None for d in self.input_shape[1:])
        return candidate_layers(self.model, self.input_name, self.layout, sample, self.output_name)

    @property
    def native_name(self) -> str:
        return self.activation_name if self.layer is None else self.layer.name

    @property
    def original_outputs(self) -> list[str]:
        return [o.name for o in self.model.graph.output]

    def _given_layout(self, target_layer: str) -> Layer | None:
        """The target tensor read with the user's ``layer_layout=`` (None when not given)."""
        given = self.layer_layout_given
        if given is None:
            return None
        node = next((n for n in self.model.graph.node if n.name == target_layer), None)
        name = node.output[0] if node is not None else target_layer
        if name not in G.produced_tensors(self.model):
            return None
        sample = tuple(d if isinstance(d, int) and d > 0 else None for d in self.input_shape[1:])
        hw = L.spatial_size((1, *sample), self.layout)
        ly = next((c for c in self.candidates if c.name == name), None)
        known = ly is not None and all(isinstance(d, int) and d > 0 for d in (*ly.shape[1:], *hw))
        if given.kind == L.TOKENS and not known:
            found = token_layers(self.model, hw, {name}, given={name: given}) if all(hw) else []
            if found:
                return found[0]
            raise LayoutError(f"tensor {name!r} is not a (N, T, C) token tensor with a patch grid for {hw} images")
        infos = {} if ly is not None else G._value_infos(G.infer_shapes(self.model))
        shape = ly.shape if ly is not None else G.tensor_shape(infos[name]) if name in infos else None
        if shape is not None and all(isinstance(d, int) and d > 0 for d in (*shape[1:], *hw)):
            # checked against the tensor (a token tensor declared NCHW, an NCHW map declared NHWC): a LayoutError
            # that names the right reading, never a map from a misread tensor
            hint = "channels_last" if len(shape) == 3 else {L.NCHW: "channels_first", L.NHWC: "channels_last"}.get(
                ly.lay.kind if ly is not None else None)
            grids = [c.spatial for c in self.candidates if c.op_type == "Conv" and None not in c.spatial]
            lay = LD.resolve_layer_layout(given, (1, *shape[1:]), hw, hint, grids, name)
            if known and lay.kind == L.TOKENS:
                return Layer(ly.name, ly.op_type, ly.shape, ly.node, lay.kind, ly.index, lay)
        if ly is not None:
            return Layer(ly.name, ly.op_type, ly.shape, ly.node, given.kind, ly.index)
        if shape is not None and len(shape) != 4:
            raise LayoutError(f"tensor {name!r} has shape {shape}, not a rank-4 {given.kind} tensor; check layer_layout=")
        producer = next(n for n in self.model.graph.node if name in n.output)
        return Layer(name, producer.op_type, tuple(shape or (None,) * 4), producer.name, given.kind, -1)

    def _resolve_layer(self, target_layer) -> Layer:
        if isinstance(target_layer, str):
            given = self._given_layout(target_layer)
            if given is not None:
                return given
        if target_layer is None:  # None when there is none: layer-free methods still run
            layer, why = pick_layer(self.candidates, self.model, self.output_name)
            self.layer_reason = f"picked automatically: {why}"
            return layer
        if not self.candidates:
            raise ModelError("this ONNX graph has no rank-4 tensor between the input and the output to explain; "
                             "use a layer-free method ('occlusion', 'rise', 'kernelshap', 'lime') without target_layer")
        if not isinstance(target_layer, str):
            raise InputError(f"target_layer must be a tensor or node name (str); got {type(target_layer).__name__}")
        for ly in self.candidates:
            if target_layer in (ly.name, ly.node):
                if not ly.has_extent:
                    best = pick_layer(self.candidates, self.model, self.output_name)[0]
                    hint = f"pick an earlier layer, e.g. {best.name!r}" if best else "use a larger input"
                    raise ModelError(f"layer {target_layer!r} has shape {ly.shape}: a 1x1 map has no spatial extent to "
                                     f"explain; {hint}")
                return ly
        produced = G.produced_tensors(self.model)
        names = [ly.name for ly in self.candidates]
        if target_layer in produced or any(n.name == target_layer for n in self.model.graph.node):
            raise ModelError(f"tensor {target_layer!r} is not a spatial (N, C, h, w) feature map of the image the output "
                             f"depends on; pick one of Explainer.layers(), e.g. {closest_names(target_layer, names)}")
        raise InputError(f"the ONNX graph has no tensor or node named {target_layer!r}; closest layer names: "
                         f"{closest_names(target_layer, names)}")

    # -- input ---------------------------------------------------------------------------------
    @property
    def channels(self) -> int | None:
        c = L.channels(self.input_shape, self.layout)
        return c if isinstance(c, int) and c > 0 else None

    @property
    def spatial(self) -> tuple | None:
        hw = tuple(d if isinstance(d, int) and d > 0 else None for d in L.spatial_size(self.input_shape, self.layout))
        return None if hw == (None, None) else hw

    # -- ONNX ----------------------------------------------------------------------------------
    def export_onnx(self, sample_shape: tuple[int, ...]) -> onnx.ModelProto:
        """The graph with the output and the layer's tensor as outputs (any per-sample shape)."""
        if self.activation_name == CHW_VIEW:
            return G.with_outputs(chw_view(self.model, self.layer.name, self.layer.lay, self.layer.shape[-1], CHW_VIEW),
                                  [self.output_name, CHW_VIEW, self.layer.name])
        return G.with_outputs(self.model, [n for n in (self.output_name, self.activation_name) if n is not None])

    def engine(self, sample_shape: tuple[int, ...]):
        # one graph serves every input size: cache a single engine
        return super().engine(())

    # -- gradients -----------------------------------------------------------------------------
    def _gradient_choice(self, gradients: bool | None) -> bool:
        if gradients is None:
            return gradient_backend_available()
        if gradients and not gradient_backend_available():
            raise MissingDependencyError(f"gradients=True needs the gradient backend (torch + onnx2torch): {GRAD_EXTRA}")
        return bool(gradients)

    def _backend(self):
        if not self._use_grad:
            raise MissingDependencyError(self.gradient_hint)
        if self.activation_name is None:
            raise ModelError("gradients of a bare ONNX model without a spatial target layer are not supported; "
                             "use a forward-only method ('occlusion', 'rise', 'kernelshap', 'lime')")
        with self._lock:  # converted once, also when threads race for it
            if self._grad_error is not None:
                raise self._grad_error
            if self._grad is None:
                from agnostic_cam.adapters.onnx.torch_gradients import TorchGradients

                try:
                    self._twin = float_twin(self.model)
                    self._grad = TorchGradients(self._twin, self.input_name, self.output_name, None if self.layer is None else self.layer.name)
                except BackendError as e:  # once per model: the next call raises the same error at once
                    self._grad_error = e
                    raise
        return self._grad

    def _check_twin(self, x: np.ndarray) -> None:
        """On fp16 / int8 graphs, measure once how far the float twin's outputs are from the shipped graph's."""
        if self.precision != "float32" and self.twin_report is None:
            self.twin_report = agreement(self.engine(()), self._twin, x, self.input_name, self.output_name)

    def describe_lines(self) -> list[str]:
        """Lines for ``Explainer.describe()``: the graph's precision and, for fp16 / int8, the twin's agreement."""
        lines = [f"precision: {self.precision} (opset {legal_opset(self.model)})"]
        if self.layer is not None:
            lines.append(f"layer {self.layer.name!r} read as {self.layer.lay}: {self.layer_reason or 'named by the caller'}")
        if self.precision != "float32":
            lines.append("forward methods run on the graph as shipped; gradient methods on its float32 twin "
                         "(fp16 -> float32; int8 -> dequantized weights, quantization without rounding)")
            r = self.twin_report
            lines.append("twin agreement: not measured yet (run a gradient method)" if r is None else
                         f"twin agreement: max |shipped - twin| output difference {r['max_abs_diff']:.3g} "
                         f"(outputs up to {r['max_abs_output']:.3g}), same top-1 on {100 * r['top1_agree']:.0f}% "
                         f"of {r['images']} image(s)")
        return lines

    def layer_gradients(self, x: np.ndarray, target: TargetSpec) -> Gradients:
        g = self._backend().layer_gradients(x, target)
        self._check_twin(x)
        g.activations = self.layer.to_chw(g.activations)
        g.grads = self.layer.to_chw(g.grads)
        return g

    def input_gradients(self, x: np.ndarray, target: TargetSpec, rule: str = "vanilla") -> Gradients:
        g = self._backend().input_gradients(x, target, rule)
        self._check_twin(x)
        return g

    def higher_derivatives(self, x: np.ndarray, target: TargetSpec, hvp: bool = False, bias: bool = False):
        """HVP / bias gradients through the gradient backend's PyTorch graph (see ``Adapter``);
        bias layers are the converted graph's convolutions and batch norms with a bias."""
        backend = self._backend()
        from agnostic_cam.adapters.pytorch.higher import backend_higher_derivatives

        h = backend_higher_derivatives(backend, x, target, hvp, bias)
        self._check_twin(x)
        if self.layer is not None and self.layer.lay.kind != L.NCHW and h.activations is not None:
            h.activations, h.grads, h.hvp = (self.layer.to_chw(a) for a in (h.activations, h.grads, h.hvp))
        return h
