"""The one entry point: ``Explainer.from_torch / from_keras / from_onnx`` and ``explain()``."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from agnostic_cam import compat
from agnostic_cam.adapters.attention import AttentionSource
from agnostic_cam.adapters.base import Adapter
from agnostic_cam.core import degenerate, relu_policy
from agnostic_cam.core.capture import Capture, Capturer, Needs
from agnostic_cam.core.combine import average_layers, product_layers, stitch
from agnostic_cam.core.explanation import Explanation
from agnostic_cam.core.options import check_options
from agnostic_cam.core.rows import explain_rows
from agnostic_cam.core.run import check_volumes, explain_batch
from agnostic_cam.engine.graph import head_op
from agnostic_cam.engine.threads import blas_one_thread, on_cpu
from agnostic_cam.errors import IncompatibleDependencyError, InputError, MissingDependencyError, ModelError, OptionError
from agnostic_cam.features.views import FeatureViews
from agnostic_cam.methods import Method, get_method, registry
from agnostic_cam.targets import MultiLabel, TargetLike, TargetSpec
from agnostic_cam.targets.translators import is_sequence_of_layers, resolve_alias, target_groups


def _layer_arg(target_layer, target_layers):
    """``target_layer`` or pytorch-grad-cam's ``target_layers=[...]``, not both."""
    if target_layers is None:
        return target_layer
    if target_layer is not None:
        raise InputError("pass either target_layer= or target_layers= (a list), not both")
    return list(target_layers)


class Explainer(FeatureViews):
    """Explains one model at one target layer with any registered method.

    Build it with :meth:`from_torch`, :meth:`from_keras` or :meth:`from_onnx`.
    ``partial_rules``: default for ``explain(..., partial_rules=)`` and :attr:`methods` (see
    :mod:`agnostic_cam.core.relu_policy`: guided/deconv methods on models that mix ReLUs with other activations).
    """

    partial_rules: bool = False

    def __init__(self, adapter: Adapter, progress: bool | None = None):
        self.adapter = adapter
        self.progress = progress
        self.preprocess = None
        self._also: list[Explainer] = []  # explainers of further target layers (target_layers=[...])
        self._attention = AttentionSource(adapter)  # attention maps and their gradients, from the ONNX graph
        self._capturer = Capturer(adapter, self._attention)  # the pipeline reads the adapter's primitives; the adapter never calls back

    @classmethod
    def _build(cls, make, layer, progress: bool | None) -> Explainer:
        """One explainer, or with a list of layers one whose CAMs average over them (``make(layer)`` -> adapter)."""
        if not is_sequence_of_layers(layer):
            return cls(make(layer), progress)
        if not layer:
            raise InputError("target_layers is an empty list; pass at least one layer (or None to pick one)")
        exs = [cls(make(ly), progress) for ly in layer]
        exs[0]._also = exs[1:]
        return exs[0]

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, model, target_layer=None, input_shape: tuple[int, int, int] | None = None, output: str = "raw",
                   providers=None, batch_size: int | None = None, progress: bool | None = None, *,
                   target_layers=None, layer_layout=None, reshape=None) -> Explainer:
        """Explainer for a ``torch.nn.Module``.

        target_layer: dotted module name (``"layer4"``, ``"layer4.1.conv2"``) or the module; None
        picks the last main-path feature map before the head (:mod:`agnostic_cam.adapters.auto_layer`)
        with a probe of ``input_shape`` (else the model's own size, else (C, 224, 224), or the images'
        shape at the first call that needs a layer); ``ex.layer`` tells which, ``ex.describe()`` why;
        a model without a spatial layer gets none, and the layer-free methods (occlusion, RISE,
        KernelSHAP, LIME) still run. A list (also ``target_layers=``, pytorch-grad-cam's spelling)
        averages the CAMs as pytorch-grad-cam does (per layer ReLU, min-max, resize; mean; min-max).
        input_shape: one image's shape (C, H, W); optional, lets errors show up at construction.
        output: ``"raw"`` the model's output, a ``ModelOutput``'s ``logits`` (a CLIP tower's
        embedding); ``"pre_softmax"`` the input of a final ``nn.Softmax``; a key / index picks one of
        a structured output (:mod:`agnostic_cam.adapters.pytorch.outputs`; docs/hub-models.md).
        providers: ONNX Runtime execution providers for forward-only methods (default CUDA, CPU).
        layer_layout: how the layer holds channels: None detects it (a LayoutError says when it
        cannot), 'NCHW', 'NHWC' (Swin, torchvision ConvNeXt blocks), 'tokens' (ViT (N, T, C): the
        class/register tokens and the patch grid are worked out) or
        ``agnostic_cam.core.layout.LayerLayout('tokens', prefix=1, grid=(14, 14))``.
        reshape: instead, a function (N, ...) -> (N, C, h, w) of torch tensors, like
        pytorch-grad-cam's ``reshape_transform``; it becomes part of the exported ONNX graph.
        """
        try:
            from agnostic_cam.adapters.pytorch.adapter import TorchAdapter
        except IncompatibleDependencyError:
            raise
        except ImportError as e:
            raise MissingDependencyError(f"{e}. Explainer.from_torch needs PyTorch: pip install 'agnostic-cam[torch]'") from None
        layer = _layer_arg(target_layer, target_layers)
        if compat.is_script_module(model):  # torch.jit.trace / script: explained through its ONNX export
            from agnostic_cam.adapters.onnx.script_adapter import ScriptAdapter

            return cls._build(lambda ly: ScriptAdapter(model, ly, input_shape, output, providers, batch_size),
                              layer, progress)
        return cls._build(lambda ly: TorchAdapter(model, ly, input_shape, output, providers, batch_size, layer_layout,
                                                  reshape), layer, progress)

    @classmethod
    def from_keras(cls, model, target_layer=None, output: str | int = "raw", providers=None, batch_size: int | None = None,
                   progress: bool | None = None, *, target_layers=None, layer_layout=None, reshape=None) -> Explainer:
        """Explainer for a Keras 3 Functional or Sequential model (NHWC input), nested models included.

        target_layer: a layer object or name, also inside a nested model; a name that two nested
        models share needs its path, e.g. ``"base/conv5_block3_out"`` (see :meth:`layers`); None
        picks the last layer whose output is a spatial map (before global pooling); ``ex.layer`` tells which
        (None without one: the layer-free methods still run).
        A list (or ``target_layers=``) averages the layers' CAMs as in :meth:`from_torch`.
        output: ``"raw"`` explains the model's output as it is; ``"logits"`` explains the scores
        before a final softmax (``Dense(activation="softmax")``, ``Softmax``, ``Activation("softmax")``)
        without modifying the model. Multi-output models: ``output=KEY`` (a dict output's key, or an
        output layer's name) or ``output=INDEX`` (a list output's index) picks the explained output,
        ``"logits:KEY"`` the scores before its softmax (see :mod:`agnostic_cam.adapters.keras.outputs`).
        layer_layout: how the layer holds channels: None detects it ((N, h, w, C) maps; token tensors
        (N, T, C) of a ViT built from keras.layers where the graph tells; a LayoutError otherwise),
        'NHWC', 'tokens' (class tokens and patch grid worked out) or
        ``agnostic_cam.core.layout.LayerLayout('tokens', prefix=1, grid=(h, w))``.
        reshape: instead, a function (N, ...) -> (N, C, h, w) of TensorFlow tensors (``keras.ops`` /
        ``tf``), like pytorch-grad-cam's ``reshape_transform``; it becomes part of the exported ONNX graph.
        """
        try:
            from agnostic_cam.adapters.keras.adapter import KerasAdapter
        except IncompatibleDependencyError:
            raise
        except ImportError as e:
            raise MissingDependencyError(f"{e}. Explainer.from_keras needs TensorFlow/Keras: pip install 'agnostic-cam[keras]'") from None
        layer = _layer_arg(target_layer, target_layers)
        return cls._build(lambda ly: KerasAdapter(model, ly, output=output, providers=providers, batch_size=batch_size,
                                                  layer_layout=layer_layout, reshape=reshape), layer, progress)

    @classmethod
    def from_onnx(cls, model, target_layer: str | None = None, layout: str | None = None, preprocess=None,
                  output: str | None = None, providers=None, batch_size: int | None = None,
                  input_name: str | None = None, gradients: bool | None = None,
                  progress: bool | None = None, *, target_layers=None, layer_layout=None, reshape=None) -> Explainer:
        """Explainer for a bare ONNX model: a path, its bytes or an ``onnx.ModelProto``.

        target_layer: a tensor name from :meth:`layers` (or a node name); None picks the last
        spatial tensor before global pooling (see ``ex.layer``); a list (or ``target_layers=``)
        averages the layers' CAMs as in :meth:`from_torch`.
        layout: 'NCHW' / 'NHWC' input layout; None detects it from the input shape.
        preprocess: a :class:`~agnostic_cam.inputs.preprocess.Preprocess`, a dict of its fields or a
        JSON/YAML file; then ``explain`` also accepts raw images (paths, PIL images, uint8 HWC).
        output: None (first graph output), a graph output's name, or 'logits' to explain the
        input of a final Softmax. gradients: None uses the onnx2torch backend when installed.
        layer_layout: the target tensor's layout when it cannot be detected ('NCHW', 'NHWC',
        'tokens' or a ``LayerLayout``); token tensors (N, T, C) and channels-last ones are found by
        themselves where the graph tells (see :meth:`layers`).
        reshape: refused with an OptionError (a Python function cannot run inside ONNX Runtime);
        ``layer_layout=`` covers pytorch-grad-cam's ViT and Swin reshape transforms.
        """
        from agnostic_cam.adapters.onnx.adapter import OnnxAdapter, refuse_reshape

        refuse_reshape(reshape)
        from agnostic_cam.inputs.preprocess import Preprocess

        ex = cls._build(lambda ly: OnnxAdapter(model, ly, layout, output, input_name, providers, batch_size, gradients,
                                                 layer_layout),
                        _layer_arg(target_layer, target_layers), progress)
        ex.preprocess = Preprocess.coerce(preprocess, ex.adapter) if preprocess is not None else None
        return ex

    # -- introspection -----------------------------------------------------------------------
    @property
    def layer(self) -> str | None:
        """The target layer's name (also when it was picked automatically); several are joined by ' + ';
        None when the explainer has none (layer-free methods only)."""
        if not self._also:
            return self.adapter.layer_name
        return " + ".join(str(e.adapter.layer_name) for e in (self, *self._also))

    @property
    def methods(self) -> list[str]:
        """Names of the methods this explainer can run (depends on the backend's abilities; attention
        methods only where the model's graph holds attention maps at a known input size). ``drise``,
        which explains a detector's boxes (a ``DetectionBoxes`` target) and nothing else, is not listed."""
        sup = self.adapter.supports
        names = [n for n, c in registry().items() if (c.needs & sup) == c.needs and not c.detection_only
                 and relu_policy.listed(self.adapter, relu_policy.method_rule(c), self.partial_rules)]
        attention = any(registry()[n].needs.uses_attention for n in names) and self._attention.available()
        return sorted(n for n in names if attention or not registry()[n].needs.uses_attention)

    def layers(self, kind: str | None = None) -> list:
        """Candidate target layers, each with ``name`` (what ``target_layer`` takes), ``op_type``,
        ``shape`` and ``layout`` ('NCHW', 'NHWC', 'tokens(prefix=1, grid=14x14)'; None: ambiguous,
        pass ``layer_layout=``). Per-head attention tensors are never offered.
        ``kind="attention"``: every block's attention probabilities (N, heads, T, T) found in the
        model's ONNX graph (``name``, ``block``, ``heads``, ``tokens``), what attention methods read;
        ``explain(..., attention=[...])`` takes a subset (names or block indices)."""
        if kind == "attention":
            return self._attention.attention_layers()
        if kind is not None:
            raise OptionError(f"kind must be None (target layers) or 'attention'; got {kind!r}")
        return self.adapter.layers()

    def describe(self) -> str:
        """A few lines on what is explained: framework, layer, layouts, runnable methods and, for ONNX
        graphs, their precision; for fp16 / int8 graphs also how far the float32 twin that gradient
        methods use is from the graph as shipped (measured on the first gradient call's images)."""
        a = self.adapter
        lines = [f"framework: {a.framework}", f"layer: {self.layer} ({a.activation_layout})",
                 f"input layout: {a.layout}", f"methods: {', '.join(self.methods)}"]
        lines += a.describe_lines()
        return "\n".join(lines)

    def predict(self, images: Any) -> np.ndarray:
        """The explained model output (N, K) for ``images``, run on ONNX Runtime in batches."""
        x = self._inputs(images)
        return self.adapter.engine(x.shape[1:]).run(x, [self.adapter.output_name])[0]

    def _inputs(self, images: Any) -> np.ndarray:
        """Validated float32 batch; raw images (paths, PIL, uint8) go through ``self.preprocess`` first."""
        if self.preprocess is not None and (not isinstance(images, np.ndarray) or images.dtype == np.uint8):
            images = self.preprocess(images)
        return self.adapter.prepare(images)

    def __repr__(self) -> str:
        return f"Explainer(framework={self.adapter.framework!r}, layer={self.layer!r}, layout={self.adapter.layout!r})"

    # -- explaining --------------------------------------------------------------------------
    def explain(self, images: Any, method: str = "gradcam", target: TargetLike = None, *, targets=None,
                **options) -> Explanation:
        """Explain ``images`` (N, ...) in the model's layout with ``method``.

        target: None (top-1), an int, one int per image, a tensor of them, a callable mapping the
        output (N, K) to (N,) scores, or pytorch-grad-cam target objects (``targets=`` is the same
        argument, e.g. ``targets=[ClassifierOutputTarget(3)]``; see :mod:`agnostic_cam.targets.translators`), or
        ``targets.MultiLabel(threshold)``: one row per (image, present class) (:mod:`agnostic_cam.core.rows`).
        ``options`` go to the method (e.g. ``steps`` for integrated gradients), except three that
        every method takes: ``batch_size`` (images or masked inputs per pass), ``aug_smooth=True``
        averages the explanation over six test-time augmentations (horizontal flip x brightness
        0.9/1/1.1, one batched call) and ``eigen_smooth=True`` (CAM methods) keeps the first principal
        component of the weighted channels instead of their sum; both follow pytorch-grad-cam's definitions.
        Returns an :class:`Explanation`: ``heatmap`` (N, H, W) float32 in [0, 1] ((N, D, H, W) for volumes).
        """
        mcls = get_method(method)
        missing = mcls.needs & ~self.adapter.supports
        if missing:
            raise ModelError(self.adapter.unsupported(mcls.name, missing, self.methods))
        aug_smooth, eigen_smooth = options.pop("aug_smooth", False), options.pop("eigen_smooth", False)
        partial = options.pop("partial_rules", None)
        options = check_options(options)
        m = mcls.create(options, options.pop("batch_size", None), eigen_smooth)
        check_volumes(m, x := self._inputs(images), registry())
        relu_policy.enforce(self.adapter, relu_policy.method_rule(m), f"method {mcls.name!r}", x.shape[1:],
                            self.partial_rules if partial is None else bool(partial))
        target = resolve_alias(target, targets)
        with blas_one_thread() if on_cpu(self.adapter.providers) else contextlib.nullcontext():  # engine/threads.py
            if isinstance(target, MultiLabel):  # one row per (image, present class), expanded once: core/rows.py
                exp = explain_rows(target, x, lambda xr, t: self._grouped(xr, m, t, aug_smooth), self.predict,
                                   lambda: head_op(self.adapter.engine(x.shape[1:]).model, self.adapter.output_name),
                                   layout=self.adapter.layout, method=m.name, layer=self.layer)
            else:
                exp = self._grouped(x, m, target, aug_smooth)
        degenerate.warn(exp)
        return exp

    def _grouped(self, x: np.ndarray, m: Method, target: Any, aug_smooth: bool) -> Explanation:
        """Images whose targets differ in kind explained in groups and put back in order (targets/translators.py)."""
        groups = target_groups(target, x.shape[0])
        if len(groups) == 1:
            return self._layers_explain(x, m, groups[0][1], aug_smooth)
        return stitch([(idx, self._layers_explain(x[idx], m, t, aug_smooth)) for idx, t in groups], x.shape[0])

    def embed(self, path, method: str = "cam", **options):
        """Write an ONNX file (``path``; None: only return it) that returns, besides the model's own outputs,
        ``saliency`` (N, H, W) in [0, 1] and ``saliency_raw``: :func:`agnostic_cam.embed.embed`."""
        from agnostic_cam.embed import embed

        return embed(self.adapter, path, method, layers=1 + len(self._also), **options)

    def _layers_explain(self, x: np.ndarray, m: Method, target: TargetLike, aug_smooth: bool) -> Explanation:
        first = self._explain_x(x, m, target, aug_smooth)
        if not self._also or first.raw.ndim != first.heatmap.ndim:  # pixel-space maps do not depend on the layer
            return first
        rest = [e._explain_x(x, m, target, aug_smooth) for e in self._also]
        combine = product_layers if m.layers_combine == "product" else average_layers
        return degenerate.combine([first, *rest], combine([first, *rest], first.heatmap.shape[1:]))

    def _explain_x(self, x: np.ndarray, m: Method, target: TargetLike, aug_smooth: bool = False) -> Explanation:
        """One batch, one layer: the pipeline of :func:`agnostic_cam.core.run.explain_batch`."""
        return explain_batch(self._capturer, m, x, target, layer=self.adapter.layer_name, layout=self.adapter.layout,
                             predict=self.predict, progress=self.progress, aug_smooth=aug_smooth, host=self)

    def capture(self, x: np.ndarray, spec: TargetSpec, needs: Needs, rule: str = "vanilla",
                method: str = "", batch_size: int | None = None) -> Capture:
        """What ``needs`` asks for, for the validated batch ``x`` (built from the adapter's primitives by
        :class:`~agnostic_cam.core.capture.Capturer`); input gradients under ReLU backward ``rule``;
        ``batch_size`` images per pass (None: the explainer's, else automatic)."""
        return self._capturer(x, spec, needs, rule, self.progress, method, batch_size)
