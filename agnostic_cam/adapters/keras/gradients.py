"""Gradients of the Keras adapter: compiled backward passes (see :mod:`agnostic_cam.adapters.keras.adapter`'s
module docstring for why every backward pass is a ``tf.function``), the output cotangent of a target,
layer gradients, the general ``vjp`` primitive and input gradients.

A mixin of :class:`agnostic_cam.adapters.keras.adapter.KerasAdapter`; it reads the adapter's ``chain``,
``input_shape``, ``_lock``, ``_compiled``, ``_evaluate``, ``_resolve``, ``_check_activation`` and, from
:mod:`.keras_tokens`, ``_ensure_layout`` and ``nhwc_view``.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.adapters.keras import graph as kg
from agnostic_cam.adapters.base import Gradients, channels_first
from agnostic_cam.errors import InputError, ModelError
from agnostic_cam.targets import TargetSpec

import tensorflow as tf


def native(a: np.ndarray) -> np.ndarray:
    """A channel-first rank-4 (rank-5: volumes) array back in Keras's channels-last layout (other ranks
    unchanged)."""
    return L.from_chw(a, L.NHWC) if a.ndim in (4, 5) else a


def first(a: np.ndarray) -> np.ndarray:
    """A Keras NHWC rank-4 array as channel-first (N, C, h, w) (rank 5: (N, C, d, h, w); other ranks
    unchanged)."""
    return channels_first(a, "NHWC") if a.ndim in (4, 5) else a


class KerasGradients:
    """Backward passes of a Keras model through its graph evaluator."""

    # -- gradients (compiled backward passes: see the module docstring) ------------------------
    def _tensor(self, x: np.ndarray):
        return tf.convert_to_tensor(np.ascontiguousarray(x, dtype=np.float32))

    @staticmethod
    def _scores(out, classes, target: TargetSpec):
        if classes is None:
            s = target.fn(out)
            if not tf.is_tensor(s) or tuple(s.shape) != (out.shape[0],):
                raise InputError(f"the target callable must return a tensor of {out.shape[0]} scores (one per image)")
            return s
        return tf.gather(out, tf.constant(classes), axis=1, batch_dims=1)

    def _cached(self, key: tuple, build):
        """``self._compiled[key]``, built by ``build()`` once (traced once per key, also when threads race)."""
        with self._lock:
            if key not in self._compiled:
                self._compiled[key] = build()
            return self._compiled[key]

    @staticmethod
    def _key(chain: tuple | None, rule: str, wrt_layer: bool, by_class: bool) -> tuple:
        return None if chain is None else tuple(id(ly) for ly in chain), rule, wrt_layer, by_class

    def _compiled_backward(self, chain: tuple | None, rule: str, wrt_layer: bool, by_class: bool = False):
        """``f(x, cot) -> (value, grad, tapped)``, compiled once per key by ``tf.function``.

        wrt_layer: value = the explained output, grad = d<value, cot>/d(layer ``chain``), tapped = the
        layer's value. Otherwise value = the layer ``chain`` (None: the output), grad = d<value, cot>/dx.
        by_class (value = the output): ``f(x, classes) -> (value, grad, tapped, classes)``, the cotangent
        made in the graph as each image's one-hot class row (class -1: its top-1 output), so no forward
        pass has to run first to find the targets. The number of ReLUs the rule applies to is kept in
        ``self._relus[key]`` when the function is traced.
        In a compiled graph TensorFlow runs only the kernels the returned tensors need: the weight
        gradients a tape would also compute are pruned (see the module docstring).
        """
        key = self._key(chain, rule, wrt_layer, by_class)
        return self._cached(key, lambda: self._backward_function(key, chain, rule, wrt_layer, by_class))

    def _backward_function(self, key: tuple, chain: tuple | None, rule: str, wrt_layer: bool, by_class: bool):
        chains = [] if chain is None else [chain]
        seed = tf.TensorSpec((None,), tf.int64) if by_class else tf.TensorSpec(None, tf.float32)
        spec = [tf.TensorSpec((None, *self.input_shape[1:]), tf.float32), seed]

        @tf.function(input_signature=spec, autograph=False)
        def backward(x, cot):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                out, vals, plan = self._evaluate(x, chains, rule)
            self._relus[key] = plan.relus
            value = out if wrt_layer or chain is None else vals[0]
            src = vals[0] if wrt_layer else x
            if by_class:
                classes = tf.where(cot < 0, tf.argmax(value, axis=1, output_type=tf.int64), cot)
                cot = tf.one_hot(classes, tf.shape(value)[1], dtype=value.dtype)
            g = tape.gradient(value, src, output_gradients=cot)
            res = (value, tf.zeros_like(src) if g is None else g, vals[0] if chains else out)
            return (*res, classes) if by_class else res

        return backward

    def _check_relus(self, rule: str, count: int) -> None:
        if rule != "vanilla" and count == 0:
            raise ModelError(f"rule {rule!r} changes how gradients pass through ReLUs, but the model has no ReLU "
                             "(layers.ReLU, Activation('relu'), activation='relu' or keras.ops.relu); use rule "
                             "'vanilla' (e.g. method 'saliency')")

    def _by_class(self, x: np.ndarray, target: TargetSpec, chain: tuple | None, rule: str, wrt_layer: bool):
        """One compiled pass for a class-index target (see ``by_class``): (outputs, grad, tapped, classes,
        scores), or None where the two-pass way (a forward pass for the targets, then the backward pass)
        is needed: a callable target, an output that is not (N, K), or classes that NumPy picks otherwise
        from the outputs (a tie or a NaN; NumPy's pick is the one every path uses)."""
        shape = tuple(getattr(self.selection.tensor, "shape", ()) or ())
        if target.fn is not None or len(shape) != 2 or (target.fixed is not None and len(target.fixed) != len(x)):
            return None
        seed = np.full(len(x), -1, np.int64) if target.fixed is None else target.fixed
        fn = self._compiled_backward(chain, rule, wrt_layer, by_class=True)
        value, grad, tapped, picked = fn(self._tensor(x), tf.constant(seed, tf.int64))
        self._check_relus(rule, self._relus[self._key(chain, rule, wrt_layer, True)])
        out = value.numpy()
        classes = target.indices(out)  # also the range check of fixed classes
        if not np.array_equal(classes, picked.numpy()):
            return None
        return out.astype(np.float32), grad, tapped, classes, out[np.arange(out.shape[0]), classes].astype(np.float64)

    def _output_cotangent(self, out: np.ndarray, target: TargetSpec):
        """(d score / d out (N, K), classes or None, scores (N,)) for the model outputs ``out``."""
        classes = target.indices(out)
        if classes is None:  # callable target: its own gradient, on a constant copy of the outputs
            o = tf.constant(out)
            with tf.GradientTape() as t:
                t.watch(o)
                s = self._scores(o, None, target)
            g = t.gradient(s, o)
            return (np.zeros_like(out) if g is None else g.numpy()), None, s.numpy().astype(np.float64)
        cot = np.zeros_like(out)
        cot[np.arange(out.shape[0]), classes] = 1.0
        return cot, classes, out[np.arange(out.shape[0]), classes].astype(np.float64)

    def layer_gradients(self, x: np.ndarray, target: TargetSpec) -> Gradients:
        self._ensure_layout(x.shape[1:])
        hit = self._by_class(x, target, self.chain, "vanilla", True)
        if hit is None:
            xt = self._tensor(x)
            out, (act,), _ = self._evaluate(xt, [self.chain])  # forward only: outputs for the targets
            self._check_activation(tuple(act.shape))
            cot, classes, scores = self._output_cotangent(out.numpy(), target)
            out, grad, act = self._compiled_backward(self.chain, "vanilla", True)(xt, tf.constant(cot))
            out = out.numpy().astype(np.float32)
        else:
            out, grad, act, classes, scores = hit
            self._check_activation(tuple(act.shape))
        return Gradients(outputs=out, scores=scores, classes=classes,
                         activations=first(np.asarray(self.nhwc_view(act), np.float32)),  # tokens: the
                         grads=first(np.asarray(self.nhwc_view(grad), np.float32)))  # same view of both

    # -- general primitives (shared contract, see Adapter.vjp) ---------------------------------
    def vjp(self, x: np.ndarray, layer, cotangent, rule: str = "vanilla") -> tuple[np.ndarray, np.ndarray]:
        """Forward ``x`` (N, H, W, C), then d<A, cotangent(A)>/dx with every ReLU under ``rule``.

        A: the explained output (N, K) when ``layer`` is None, else the layer's output (channel-first
        (N, C, h, w) when rank 4; the target layer's tokens on their patch grid, see ``viewed``).
        Returns (A float32, dx float32 (N, H, W, C)).
        """
        kg.check_rule(rule)
        chain = None if layer is None else self._resolve(layer)
        xt = self._tensor(x)
        out, vals, plan = self._evaluate(xt, [] if chain is None else [chain], rule)  # forward only
        self._check_relus(rule, plan.relus)
        val = out if chain is None else vals[0]
        view = chain is not None and self.viewed(chain, x.shape[1:])  # target tokens: their (N, h, w, C) map
        a_np = first((self.nhwc_view(val) if view else val).numpy().astype(np.float32))
        cot = np.asarray(cotangent(a_np), dtype=np.float32)
        if cot.shape != a_np.shape:
            raise InputError(f"the cotangent must have the layer value's shape {a_np.shape}; got {cot.shape}")
        cot_t = tf.constant(native(cot))
        if view:  # the view's own backward (slice / reshape) takes the cotangent to the layer's tensor
            n = tf.constant(val.numpy())
            with tf.GradientTape() as tape:
                tape.watch(n)
                v = self.nhwc_view(n)
            cot_t = tape.gradient(v, n, output_gradients=cot_t)
        _, gx, _ = self._compiled_backward(chain, rule, False)(xt, cot_t)
        return a_np, gx.numpy().astype(np.float32)

    def input_gradients(self, x: np.ndarray, target: TargetSpec, rule: str = "vanilla") -> Gradients:
        """d(score)/d(input) (N, H, W, C) under ``rule``: one compiled pass for a class-index target,
        else one :meth:`vjp` of the output."""
        hit = self._by_class(x, target, None, kg.check_rule(rule), False)
        if hit is not None:
            out, gx, _, classes, scores = hit
            return Gradients(outputs=out, scores=scores, classes=classes, input_grads=gx.numpy().astype(np.float32))
        found: dict = {}

        def cotangent(out: np.ndarray) -> np.ndarray:
            cot, found["classes"], found["scores"] = self._output_cotangent(out, target)
            return cot

        out, gx = self.vjp(x, None, cotangent, rule)
        return Gradients(outputs=out, scores=found["scores"], classes=found["classes"], input_grads=gx)
