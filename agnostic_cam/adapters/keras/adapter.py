"""Keras 3 adapter (TensorFlow backend). Imports keras/tensorflow lazily (this module is loaded by
``Explainer.from_keras`` only).

The model is never modified: layers are read through an evaluator of the model's functional
graph (:mod:`agnostic_cam.adapters.keras.graph`) that taps any layer, also inside nested models,
applies ReLU backward rules and reads logits before a final softmax by evaluating *views* of the
layers that share their variables.

Crash defence (oneDNN). TensorFlow's oneDNN CPU kernels have known crash bugs (segfaults,
aborts) in some convolution backward kernels for particular shapes; this project hit one with a
residual 1x1 stride-2 'same' convolution shortcut in a mini-Xception. An eager ``GradientTape``
runs *both* backward kernels of every convolution even when only d/dinput is asked for (TF's
Conv2D gradient function always returns the filter gradient too; ``watch_accessed_variables=False``
does not change that). Here every backward pass is a compiled ``tf.function`` graph whose only
outputs are the values and the one gradient we need; TensorFlow prunes every node the outputs do
not depend on before running a function, so the weight-gradient kernels (``Conv2DBackpropFilter``,
depthwise filter gradients, BatchNorm scale/offset gradients) never execute - none of our methods
needs d/dweights. ``ONEDNN_VERBOSE=1`` shows it: eager, each convolution runs ``backward_data`` and
``backward_weights`` primitives; compiled, ``backward_data`` only. The tape also watches the input
only, so no variable is recorded. Rejected alternatives: ``TF_ENABLE_ONEDNN_OPTS`` is read once
at TensorFlow import, so oneDNN cannot be turned off per call, and a library must not set
process-wide environment variables; converting the model to PyTorch through ONNX for gradients
would replace TensorFlow's own autograd by a second implementation. The crash itself no longer
reproduces on this machine (TF 2.21); tests/test_keras_crash_defence.py runs the risky case in a
subprocess (a crash fails the test instead of killing the session) and checks what the defence
guarantees, whatever kernels the CPU picks: the gradients are right (against an eager tape), no
tape watches a variable, and no weight-gradient op is reachable from a compiled backward graph's
outputs.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.adapters.keras import graph as kg
from agnostic_cam.engine.eager import engine_for, run_export
from agnostic_cam.adapters.keras.export import convert, rename_through_identities, replace_erfc
from agnostic_cam.adapters.base import ACTIVATION, NATIVE, OUTPUT, Adapter, closest_names
from agnostic_cam.errors import InputError, LayoutError, MissingDependencyError, ModelError, NonFiniteError

try:
    import keras
    import tensorflow as tf
except ImportError as e:  # pragma: no cover - exercised by test_import with tensorflow blocked
    raise MissingDependencyError("Explainer.from_keras needs TensorFlow/Keras: pip install 'agnostic-cam[keras]'") from e

from agnostic_cam.adapters.keras.gradients import KerasGradients, first as _first  # noqa: E402 (needs TensorFlow)
from agnostic_cam.adapters.keras.higher import KerasHigherOrder  # noqa: E402 (needs TensorFlow)
from agnostic_cam.adapters.keras.outputs import resolve  # noqa: E402
from agnostic_cam.adapters.keras.layers import KerasLayouts  # noqa: E402 (needs TensorFlow)
from agnostic_cam.adapters.keras.pick import keras_pick  # noqa: E402 (needs TensorFlow)


class KerasAdapter(KerasLayouts, KerasHigherOrder, KerasGradients, Adapter):
    """Explains a Functional or Sequential Keras 3 model (also with nested models), NHWC input; the
    target layer is a channels-last map or a token tensor (:mod:`.keras_tokens`).
    ``supports`` (what it computes, FullGrad's bias gradients only where the model allows) comes
    from :class:`~agnostic_cam.adapters.keras.higher.KerasHigherOrder`."""

    framework = "keras"
    layer_reason = ""  # why the target layer is the one it is (automatic pick), for describe()
    layout = "NHWC"
    activation_layout = "NHWC"

    def __init__(self, model, target_layer=None, output: str | int = "raw", providers=None, batch_size: int | None = None,
                 layer_layout=None, reshape=None):
        super().__init__(providers, batch_size)
        self._init_layouts(layer_layout, reshape)
        if not isinstance(model, keras.Model):
            raise InputError(f"from_keras expects a keras.Model; got {type(model).__name__}")
        if not kg.is_graph_model(model):
            raise InputError(f"{type(model).__name__} is a subclassed keras.Model, whose layers cannot be read without "
                             "changing it; build the network with the functional API (keras.Model(inputs, outputs)) or "
                             "keras.Sequential, which may nest other models")
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not model.built or not inputs:
            raise ModelError("the Keras model has never been built or called, so its layers have no shapes yet; call "
                             "it once on a batch (model(x)) or give it an input (keras.Input / model.build((None, H, W, C)))")
        if len(inputs) != 1:
            raise ModelError(f"the model has {len(inputs)} inputs; a model with one image input is expected")
        self.selection = resolve(model, output)  # which output is explained (keras_outputs.py)
        self.input_shape = tuple(inputs[0].shape)
        if len(self.input_shape) not in (4, 5):
            raise ModelError(f"the model's input has shape {self.input_shape}; an image classifier takes (N, H, W, C), "
                             "a volume / clip classifier (N, D, H, W, C)")
        if keras.config.image_data_format() != "channels_last":
            raise LayoutError("channels_first Keras models are not supported (TensorFlow CPU kernels are NHWC); "
                              "use keras.config.set_image_data_format('channels_last')")
        self.model = model
        self.output = output
        self._chains = kg.walk(model)
        self._head = kg.softmax_head(model, self.selection.tensor) if self.selection.logits else None
        self._compiled: dict = {}
        self._relus: dict = {}  # compiled backward key -> ReLUs its rule applies to (set when traced)
        self.chain = self._resolve(target_layer) if target_layer is not None else None
        if target_layer is None:  # the rule all frameworks share; none: layer-free methods still run
            self.chain, why = keras_pick(self)
            self.layer_reason, self._no_layer = (f"picked automatically: {why}", "") if self.chain else ("", why)
        if self.chain is None:
            self.layer = self.layer_name = self.activation_name = None
        else:
            self.layer, self.layer_name = self.chain[-1], self._name(self.chain)
            self._check_static_shape()

    # -- layers --------------------------------------------------------------------------------
    def _name(self, chain: tuple) -> str:
        """The plain layer name when it is unique in the model, else its path ``outer/inner``."""
        hits = [c for c in self._chains if c[-1].name == chain[-1].name]
        return chain[-1].name if len(hits) == 1 else kg.path(chain)

    def layer_names(self) -> list[str]:
        """Every layer, nested ones included, by the name ``target_layer`` takes (see :meth:`_name`)."""
        return [self._name(c) for c in self._chains]

    def _resolve(self, layer) -> tuple:
        if isinstance(layer, keras.layers.Layer):
            for c in self._chains:
                if c[-1] is layer:
                    return c
            raise InputError(f"layer {layer.name!r} is not part of the model; pass one of its layers or a name, e.g. "
                             f"{closest_names(layer.name, self.layer_names())}")
        if not isinstance(layer, str):
            raise InputError(f"target_layer must be a layer name or a keras layer; got {type(layer).__name__}")
        hits = [c for c in self._chains if kg.path(c) == layer] or [c for c in self._chains if c[-1].name == layer]
        if len(hits) > 1:
            paths = ", ".join(repr(kg.path(c)) for c in hits)
            raise InputError(f"layer name {layer!r} exists in several nested models; pass its path instead: {paths}")
        if not hits:
            raise InputError(f"model has no layer named {layer!r}; closest names: "
                             f"{closest_names(layer, self.layer_names() + [kg.path(c) for c in self._chains])}")
        return hits[0]

    def _spatial_examples(self) -> str:
        names = [c.name for c in self.layers()]
        return f"; pick a convolutional layer, e.g. {', '.join(repr(n) for n in names[-4:])}" if names else ""

    @staticmethod
    def _static_shape(layer) -> tuple | None:
        try:
            return tuple(layer.output.shape)
        except (AttributeError, ValueError):  # shared layers have several outputs
            return None

    def _check_static_shape(self) -> None:
        self._ensure_layout()
        shape = self._static_shape(self.layer)
        if shape is not None:
            self._check_activation(shape)

    def _check_activation(self, shape: tuple) -> None:
        """The target layer's own tensor of ``shape`` must read as a map (N, C, h, w) with h*w > 1."""
        if len(shape) not in (3, 4, 5) and self.reshape is None:
            raise ModelError(f"layer {self.layer_name!r} outputs shape {shape}, not a spatial (N, h, w, C) map, "
                             f"(N, d, h, w, C) volume or tokens (N, T, C){self._spatial_examples()}")
        chw = self._chw_shape(shape)
        if chw is not None and None not in chw[2:] and int(np.prod(chw[2:])) <= 1:
            raise ModelError(f"layer {self.layer_name!r} outputs shape {shape}: a 1x1 map has no spatial extent to "
                             f"explain. Use larger input images or an earlier layer{self._spatial_examples()}")

    # -- input ---------------------------------------------------------------------------------
    @property
    def channels(self) -> int | None:
        return self.input_shape[-1]

    @property
    def spatial(self) -> tuple | None:
        hw = tuple(self.input_shape[1:-1])
        return None if all(d is None for d in hw) else hw

    # -- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, xt, chains: list, rule: str = "vanilla", replace: dict | None = None, export: bool = False,
                  wrap=None):
        """(explained output, [tapped values]) of the model for the tensor ``xt``; ``replace``: tap
        index -> tensor used instead of that layer's output; ``export``: written with ops tf2onnx
        converts (see :func:`keras_graph.exportable`); ``wrap``: see ``keras_graph.Plan.wrap``."""
        plan = kg.Plan(taps=list(chains), rule=rule, head=self._head, replace=dict(replace or {}), export=export,
                       select=self.selection.pick, wrap=wrap)
        out = kg.evaluate(self.model, xt, plan)
        missing = [self._name(c) for i, c in enumerate(chains) if i not in plan.values]
        if missing:
            raise InputError(f"layer(s) {missing} are not on the path from the model's input to its output")
        return out, [plan.values[i] for i in range(len(chains))], plan

    def weights_version(self) -> object:
        """A fingerprint of every variable's values (its sum and sum of squares): changes when the user
        trains the model further or loads other weights, so the ONNX export is refreshed. NumPy sums of
        the variables' values: a compiled function over every variable had to be traced once per
        explainer, which cost more than the sums it saved."""
        ws = list(self.model.weights)
        if not ws:
            return None
        sums = np.empty(2 * len(ws))
        for i, w in enumerate(ws):
            a = np.asarray(w.numpy())
            f = a.reshape(-1) if a.dtype in (np.float32, np.float64) else a.reshape(-1).astype(np.float32)
            sums[i] = f.sum(dtype=np.float64)
            sums[len(ws) + i] = np.einsum("i,i->", f, f)  # not np.dot: BLAS threads would spin beside ONNX Runtime
        if not np.isfinite(sums[:len(ws)]).all():  # a NaN/Inf weight makes its sum non-finite
            bad = next(w for w in ws if not np.isfinite(np.asarray(w.numpy(), np.float64)).all())
            raise NonFiniteError(f"the model's weight {bad.path!r} holds NaN or Inf values; every explanation of this "
                                 "model would be meaningless. Reload or retrain the weights", where=f"model weight {bad.path}")
        return sums.tobytes()

    def export_onnx(self, sample_shape: tuple[int, ...]):
        """tf2onnx conversion of the evaluator traced by ``tf.function``: outputs [output, activation]."""
        spec = [tf.TensorSpec((None, *sample_shape), tf.float32, name="input")]

        chains = [] if self.chain is None else [self.chain]

        self._ensure_layout(sample_shape)

        @tf.function(input_signature=spec, autograph=False)
        def tapped(x):
            out, acts, _ = self._evaluate(x, chains, export=True)
            return (out, *self.export_taps(acts))  # a token layer: its (N, h, w, C) view, then itself

        conc = tapped.get_concrete_function()
        if chains:
            self._check_activation(tuple(conc.structured_outputs[-1].shape))
        proto = None

        def export():
            nonlocal proto
            proto = replace_erfc(convert(conc))

        run_export(export)  # tf2onnx's prints kept off stdout/stderr; its failures fall back (fallback.py)
        for o, new in zip([o.name for o in proto.graph.output], (OUTPUT, ACTIVATION, NATIVE)):
            rename_through_identities(proto.graph, o, new)
        return proto

    def _make_engine(self, sample_shape: tuple[int, ...]):
        """ONNX Runtime on the export, or Keras forward passes when it fails (one warning)."""
        return engine_for(self, sample_shape)

    def eager_forward(self, x: np.ndarray, replace: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(explained output, target layer's own tensor) for ``x``, the layer's output replaced by
        ``replace`` when given: the export fallback's forward pass."""
        rep = {} if replace is None else {0: tf.constant(np.ascontiguousarray(replace, dtype=np.float32))}
        out, (act,), _ = self._evaluate(self._tensor(x), [self.chain], replace=rep)
        return out.numpy().astype(np.float32), act.numpy().astype(np.float32)

    def activations(self, x: np.ndarray, layers: list) -> list[np.ndarray]:
        """Forward only: each layer's output for ``x`` (NCHW for rank-4 layers; the target layer's
        tokens on their patch grid), float32."""
        chains = [self._resolve(ly) for ly in layers]
        _, vals, _ = self._evaluate(self._tensor(x), chains)
        return [_first((self.nhwc_view(v) if self.viewed(c, x.shape[1:]) else v).numpy().astype(np.float32))
                for c, v in zip(chains, vals)]

    def activation_census(self, sample_shape: tuple[int, ...] | None = None):
        """The model's activations, read from its graph (see :func:`keras_graph.census`)."""
        if getattr(self, "_census", None) is None:
            self._census = kg.census(self.model)
        return self._census

    def conv_weights(self, layer) -> np.ndarray:
        """A 2-D convolution's kernel as (O, I, kh, kw) float32; a DepthwiseConv2D's as (C*m, 1, kh, kw)."""
        chain = self._resolve(layer)
        ly = chain[-1]
        if isinstance(ly, keras.layers.DepthwiseConv2D):
            k = np.asarray(ly.kernel.numpy(), np.float32)  # (kh, kw, C, m)
            kh, kw, c, m = k.shape
            return np.ascontiguousarray(k.reshape(kh, kw, c * m, 1).transpose(2, 3, 0, 1))
        if not isinstance(ly, keras.layers.Conv2D):
            raise InputError(f"layer {self._name(chain)!r} is a {type(ly).__name__}, not a Conv2D with a (kh, kw, I, O) "
                             "kernel; pass a keras.layers.Conv2D")
        return np.ascontiguousarray(np.asarray(ly.kernel.numpy(), np.float32).transpose(3, 2, 0, 1))
