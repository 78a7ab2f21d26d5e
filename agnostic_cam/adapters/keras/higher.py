"""Derivatives beyond one gradient for the Keras adapter (the Keras side of
:mod:`agnostic_cam.adapters.pytorch.higher`):

- Hessian-vector product at the target layer, ``H A = d/dA <dS/dA, A>`` (ShapleyCAM): two nested
  ``GradientTape``s, the inner one's gradient recorded by the outer one.
- Bias gradients (FullGrad): for every ``Conv2D``, ``DepthwiseConv2D`` and ``SeparableConv2D`` with a
  bias and every ``BatchNormalization`` with a beta on a (N, h, w, C) map (the layers pytorch-grad-cam's
  FullGrad takes in PyTorch: 2-D convolutions and ``BatchNorm2d``), its bias vector (BatchNorm: the
  effective bias ``beta - mean * gamma / sqrt(var + eps)``) and d(score)/d(the layer's output before
  its fused activation), in evaluation order; plus d(score)/d(input). Gradients are taken with respect
  to these outputs, never to the variables: d(score)/d(bias_c) is their sum over positions.

Crash defence as in :mod:`agnostic_cam.adapters.keras.adapter`: each pass is a compiled ``tf.function``
whose outputs are only what is asked, so TensorFlow prunes the weight-gradient kernels. A mixin of
:class:`~agnostic_cam.adapters.keras.adapter.KerasAdapter` (reads ``model``, ``chain``, ``layer_name``,
``input_shape``, ``_head``, ``_lock``, ``_compiled``, ``_evaluate``, ``_tensor``, ``_static_shape``,
``_output_cotangent``, ``_check_activation``, ``_cached``).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from agnostic_cam.adapters.keras import graph as kg
from agnostic_cam.adapters.base import Higher
from agnostic_cam.adapters.keras.gradients import first
from agnostic_cam.core.capture import Needs
from agnostic_cam.errors import BackendError
from agnostic_cam.targets import TargetSpec

BASE_NEEDS = (Needs.ACTIVATIONS | Needs.FORWARD | Needs.TAIL | Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS
              | Needs.ATTENTION | Needs.ATTENTION_GRADIENTS | Needs.BLOCK_GRADIENTS)  # attention: from the ONNX export
CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def is_bias_layer(op) -> bool:
    """A 2-D convolution with a bias, or a batch norm with a beta (exact classes, as the PyTorch side)."""
    if type(op) in CONVS:
        return bool(op.use_bias)
    return type(op) is keras.layers.BatchNormalization and bool(op.center)


def effective_bias(op) -> np.ndarray:
    """(C,) the layer's bias; a batch norm's beta - moving_mean * gamma / sqrt(moving_var + eps)."""
    f = lambda v: np.asarray(keras.ops.convert_to_numpy(v), np.float64)  # noqa: E731
    if isinstance(op, keras.layers.BatchNormalization):
        gamma = f(op.gamma) if op.scale else 1.0
        b = f(op.beta) - f(op.moving_mean) * gamma / np.sqrt(f(op.moving_variance) + op.epsilon)
    else:
        b = f(op.bias)
    return b.astype(np.float32)


def bias_problem(chains: list, static_shape) -> str:
    """Why FullGrad cannot run on this model ('' when it can): a convolution / batch norm inside a
    layer whose graph cannot be evaluated op by op (its output cannot be read), a channels-first
    convolution, or a batch norm over another axis than the channels of a (N, h, w, C) map."""
    for c in chains:
        op = c[-1]
        if kg.is_graph_model(op):
            continue
        inner = [ly for ly in getattr(op, "_flatten_layers", lambda **k: [])(include_self=False, recursive=True)
                 if is_bias_layer(ly)]
        if inner:
            return (f"layer {kg.path(c)!r} ({type(op).__name__}) holds {type(inner[0]).__name__} {inner[0].name!r} "
                    "inside its own code, so the output of that layer cannot be read without changing the model; build "
                    "the block with the functional API (a nested keras.Model) so FullGrad can see its bias layers")
        if not is_bias_layer(op):
            continue
        if type(op) in CONVS and op.data_format != "channels_last":
            return f"convolution {kg.path(c)!r} is channels_first; FullGrad reads (N, h, w, C) maps"
        shape = static_shape(op)
        if type(op) is keras.layers.BatchNormalization and shape is not None and len(shape) == 4 \
                and op.axis not in (-1, 3, [-1], [3]):
            return (f"batch norm {kg.path(c)!r} normalises axis {op.axis}, not the channels of its (N, h, w, C) "
                    "map, so it has no per-channel bias for FullGrad")
    return ""


class KerasHigherOrder:
    """``Adapter.higher_derivatives`` (HVP and bias gradients) for a KerasAdapter."""

    @property
    def supports(self) -> Needs:
        """What this adapter provides: FullGrad's bias gradients only when :attr:`higher_hint` is ''."""
        return BASE_NEEDS | Needs.HVP | (Needs(0) if self.higher_hint else Needs.BIAS_GRADIENTS)

    @property
    def higher_hint(self) -> str:
        """Why bias gradients are not available for this model ('' when they are); checked once."""
        if getattr(self, "_bias_problem", None) is None:
            self._bias_problem = bias_problem(self._chains, self._static_shape)
        return self._bias_problem

    def higher_derivatives(self, x: np.ndarray, target: TargetSpec, hvp: bool = False, bias: bool = False) -> Higher:
        """Outputs, scores and classes of ``x`` (N, H, W, C), then what is asked (see :class:`Higher`)."""
        if bias and self.higher_hint:
            raise BackendError(f"FullGrad cannot run on this model: {self.higher_hint}")
        if hvp:
            self._ensure_layout(x.shape[1:])
        xt = self._tensor(x)
        out = self._evaluate(xt, [])[0].numpy()  # forward only: the targets
        cot, classes, scores = self._output_cotangent(out.astype(np.float32), target)
        res = Higher(out.astype(np.float32), scores, classes)
        if hvp:
            self._hvp_into(res, xt, cot, target)
        if bias:
            fn = self._cached(("fullgrad",), self._bias_function)
            vals = fn(xt, tf.constant(cot))
            g = vals[1:]
            res.input_grads = g[0].numpy().astype(np.float32)
            res.bias_terms = [(effective_bias(op), first(gi.numpy().astype(np.float32)))
                              for op, gi in zip(self._bias_ops, g[1:])]
        return res

    # -- compiled passes ------------------------------------------------------------------------
    def _spec(self) -> list:
        return [tf.TensorSpec((None, *self.input_shape[1:]), tf.float32), tf.TensorSpec(None, tf.float32)]

    def _hvp_into(self, res: Higher, xt, cot: np.ndarray, target: TargetSpec) -> None:
        if target.fn is None:  # score = <out, one-hot>: linear in the output, so the cotangent is exact
            key = ("hvp", tuple(id(ly) for ly in self.chain))
            fn = self._cached(key, lambda: self._hvp_function(lambda out, c: tf.reduce_sum(out * c)))
        else:  # a callable target: its own second derivatives count too, so it runs inside the graph
            fn = self._hvp_function(lambda out, c: tf.reduce_sum(target.fn(out)))
        try:
            act, g, h = fn(xt, tf.constant(cot))
        except (LookupError, NotImplementedError, tf.errors.OpError) as e:
            raise BackendError(f"the Hessian-vector product needs second derivatives of every operation after layer "
                               f"{self.layer_name!r}, and TensorFlow cannot give one here ({e}); pick a later target "
                               "layer") from None
        self._check_activation(tuple(act.shape))
        # a token layer: the same (N, h, w, C) view of all three (linear, so the view of the HVP is the HVP of the view)
        res.activations, res.grads, res.hvp = (first(np.asarray(self.nhwc_view(a), np.float32)) for a in (act, g, h))

    def _hvp_function(self, score):
        """``f(x, cot) -> (A, dS/dA, d/dA <dS/dA, A>)`` at the target layer; only these three are
        outputs, so no weight gradient runs."""
        chains = [self.chain]

        @tf.function(input_signature=self._spec(), autograph=False)
        def hvp(x, cot):
            with tf.GradientTape(watch_accessed_variables=False) as outer:
                outer.watch(x)
                with tf.GradientTape(watch_accessed_variables=False) as inner:
                    inner.watch(x)
                    out, (act,), _ = self._evaluate(x, chains)
                    s = score(out, cot)
                g = inner.gradient(s, act)
                g = tf.zeros_like(act) if g is None else g
            h = outer.gradient(g, act, output_gradients=tf.stop_gradient(act))
            return act, g, tf.zeros_like(act) if h is None else h

        return hvp

    def _bias_function(self):
        """``f(x, cot) -> (out, d<out, cot>/dx, d<out, cot>/dz for every bias layer output z)``; the
        bias layers met while tracing are kept, in order, in ``self._bias_ops``."""
        ops: list = []

        @tf.function(input_signature=self._spec(), autograph=False)
        def bias_grads(x, cot):
            ops.clear()
            zs: list = []
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                out = self._evaluate(x, [], wrap=_pre_activation_tap(ops, zs, self._head))[0]
            grads = tape.gradient(out, [x, *zs], output_gradients=cot)
            return (out, *(tf.zeros_like(t) if g is None else g for t, g in zip([x, *zs], grads)))

        bias_grads.get_concrete_function()  # trace now: fills ops
        self._bias_ops = list(ops)
        return bias_grads


def _pre_activation_tap(ops: list, zs: list, head: tuple | None):
    """A ``Plan.wrap``: every bias layer is evaluated through a view without its fused activation;
    its pre-activation output z is recorded (``zs``, its layer in ``ops``), then the activation applied.
    ``head``: the softmax head that ``output='logits'`` already evaluates without its activation."""

    def wrap(op, chain, f):
        if not is_bias_layer(op):
            return f
        act = getattr(op, "activation", None)
        if act is None or act is keras.activations.linear or kg.same(chain, head):
            def tapped(*a, **k):
                z = f(*a, **k)
                return _keep(op, z)
        else:
            v = kg.view(op, activation=keras.activations.linear)

            def tapped(*a, **k):
                return act(_keep(op, v.call(*a)))

        return tapped

    def _keep(op, z):
        if len(z.shape) != 4:  # a batch norm over features (N, C): BatchNorm1d, which FullGrad leaves out
            return z
        ops.append(op)
        zs.append(z)
        return z

    return wrap
