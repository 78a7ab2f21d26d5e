"""Evaluating a Keras 3 model op by op without changing it: layer paths, taps, ReLU rules, logits.

Keras has no hooks. Like tf-keras-vis we read intermediate tensors from the model's functional
graph, but instead of building a new ``keras.Model`` per call we *evaluate* the graph ourselves
(``Functional._run_through_graph`` with our own per-operation callable, ``Sequential`` layer by layer,
nested models recursively). The same evaluator serves four purposes, all without touching the
user's layers:

- taps: record the value of any layer, also inside nested models (``"base/conv5_block3_out"``);
- backward rules: every ReLU (``layers.ReLU``, ``Activation("relu")``, ``keras.ops.relu`` nodes and
  ReLUs fused into layers such as ``Conv2D(activation="relu")``) is evaluated through
  :func:`ruled`, a ``tf.custom_gradient`` whose forward is the layer's own and whose backward
  follows the rule. A fused ReLU is split off with a *view* of the layer (:func:`view`: a new
  object sharing the layer's ``__dict__`` - the same variables - with ``activation`` replaced);
- ``output="logits"``: the final softmax (a ``Dense(activation="softmax")``, ``Softmax`` or
  ``Activation("softmax")``) is evaluated as the identity, again through a view;
- ONNX export: the same evaluation traced by ``tf.function`` gives one graph whose outputs are
  the model output and the tapped layer.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from agnostic_cam import compat

Functional = compat.keras_functional()  # private: probed, see agnostic_cam.compat
from agnostic_cam.core.relu_policy import Census
from agnostic_cam.errors import ModelError, OptionError

RULES = ("vanilla", "guided", "deconv")
_RELU_NAMES = ("relu", "relu6")
_RELU_OPS = ("Relu", "Relu6")  # keras.ops.relu / relu6 called on symbolic tensors become graph nodes


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise OptionError(f"unknown backward rule {rule!r}; use one of {', '.join(map(repr, RULES))}")
    return rule


def is_graph_model(layer) -> bool:
    """Functional or Sequential models: their graph can be walked."""
    return isinstance(layer, (Functional, keras.Sequential))


def sublayers(model) -> list:
    return [ly for ly in model.layers if not isinstance(ly, keras.layers.InputLayer)]


def walk(model, prefix: tuple = ()) -> list[tuple]:
    """Every layer as a chain (outer model's layer, ..., layer), nested models included."""
    chains = []
    for ly in sublayers(model):
        chain = prefix + (ly,)
        chains.append(chain)
        if is_graph_model(ly):
            chains.extend(walk(ly, chain))
    return chains


def path(chain: tuple) -> str:
    return "/".join(ly.name for ly in chain)


def same(a: tuple | None, b: tuple | None) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _fn_name(fn) -> str:
    return getattr(fn, "__name__", "") or ""


def is_relu_fn(fn) -> bool:
    return callable(fn) and _fn_name(fn) in _RELU_NAMES


def is_relu_layer(op) -> bool:
    """A ``layers.ReLU`` that is ReLU-family: no negative slope, threshold 0 (any ``max_value``)."""
    return (isinstance(op, keras.layers.ReLU) and float(getattr(op, "negative_slope", 0) or 0) == 0
            and float(getattr(op, "threshold", 0) or 0) == 0)


_NOT_ACTIVATIONS = ("linear", "softmax", "log_softmax")
_OTHER_OPS = {"Sigmoid", "Tanh", "Silu", "Swish", "Gelu", "HardSigmoid", "HardSilu", "HardSwish", "Elu", "Selu",
              "Celu", "LeakyRelu", "Softplus", "Softsign", "Mish", "Glu", "LogSigmoid", "HardTanh", "TanhShrink",
              "SparsePlus", "Squareplus"}


def census(model) -> Census:
    """The model's activations (layers, fused ``activation=`` and ``keras.ops`` nodes), nested models
    included; the operation producing the model's output is not counted (a sigmoid/softmax head)."""
    relus, others = [], []
    head = output_chain(model)
    for chain in walk(model):
        op = chain[-1]
        if is_graph_model(op) or same(chain, head):
            continue
        name = type(op).__name__
        fn = getattr(op, "activation", None)
        if isinstance(op, keras.layers.ReLU):
            (relus if is_relu_layer(op) else others).append("ReLU" if is_relu_layer(op) else "LeakyReLU")
        elif name in _RELU_OPS:
            relus.append(name)
        elif name in _OTHER_OPS or isinstance(op, (keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.ELU)):
            others.append(name)
        elif isinstance(op, keras.layers.Layer) and callable(fn) and _fn_name(fn) not in _NOT_ACTIVATIONS:
            (relus if is_relu_fn(fn) else others).append(_fn_name(fn) or "activation")
    return Census(tuple(relus), tuple(others))


def is_softmax_fn(fn) -> bool:
    return callable(fn) and _fn_name(fn) in ("softmax", "log_softmax")


def _is_softmax_op(op) -> bool:
    """A Softmax layer, or a keras.ops.softmax node of a functional graph."""
    return isinstance(op, keras.layers.Softmax) or type(op).__name__ == "Softmax"


def view(layer, **attrs):
    """A new object of the layer's class sharing its state (same variables), with ``attrs``
    replaced on the view only. The user's layer is not modified."""
    v = object.__new__(type(layer))
    v.__dict__.update(layer.__dict__)
    for k, val in attrs.items():
        object.__setattr__(v, k, val)
    return v


def ruled(f, rule: str):
    """``f`` (an element-wise ReLU-like function) with its backward replaced by ``rule``.

    With upstream gradient g and the true local gradient f'(x) (for ReLU ``[x > 0]``):
    guided (Springenberg et al. 2015): max(g * f'(x), 0) = max(g, 0) * [x > 0];
    deconv (Zeiler & Fergus 2014): max(g, 0), whatever the forward input.
    """
    if rule == "vanilla":
        return f

    @tf.custom_gradient
    def g(x):
        y = f(x)

        def backward(dy):
            if rule == "deconv":
                return tf.nn.relu(dy)
            with tf.GradientTape() as t:  # f's own (true) local gradient, then its positive part
                t.watch(x)
                yy = f(x)
            return tf.nn.relu(t.gradient(yy, x, output_gradients=dy))

        return y, backward

    return g


def output_chain(model, prefix: tuple = (), tensor=None) -> tuple:
    """The chain of the operation producing the model's (single) output, or its output ``tensor``."""
    if isinstance(model, keras.Sequential):
        last = sublayers(model)[-1]
    else:
        last = compat.keras_history_operation(model.outputs[0] if tensor is None else tensor)
    chain = prefix + (last,)
    return output_chain(last, chain) if is_graph_model(last) else chain


def softmax_head(model, tensor=None) -> tuple:
    """Chain of the final softmax operation (of output ``tensor``), for ``output='logits'``."""
    chain = output_chain(model, tensor=tensor)
    op = chain[-1]
    if _is_softmax_op(op) or is_softmax_fn(getattr(op, "activation", None)):
        return chain
    act = _fn_name(getattr(op, "activation", None))
    raise ModelError(f"output='logits' needs a model that ends in a softmax (Dense(activation='softmax'), a Softmax or "
                     f"Activation('softmax') layer); its last layer {path(chain)!r} is a {type(op).__name__}"
                     f"{f' with activation {act!r}' if act else ''}. If it already returns logits, use output='raw'")


@dataclass
class Plan:
    """What one evaluation does: which chains to tap, the ReLU rule, the softmax head to bypass."""

    taps: list = field(default_factory=list)
    rule: str = "vanilla"
    head: tuple | None = None
    values: dict = field(default_factory=dict)
    relus: int = 0
    replace: dict = field(default_factory=dict)  # tap index -> value used instead of the layer's output
    export: bool = False  # trace with ops tf2onnx converts (see exportable)
    select: Callable | None = None  # the explained tensor of the model's outputs (keras_outputs.Selection.pick)
    wrap: object = None  # (op, chain, f) -> the callable evaluating op instead of f (keras_higher: pre-activation taps)


def exportable(op):
    """A depthwise ``Conv2D(groups=C)`` (ConvNeXt) as ``tf.nn.depthwise_conv2d``, or None.

    Keras runs grouped convolutions on TensorFlow through an XLA-compiled nested function, which
    tf2onnx leaves as an unconverted ``StatefulPartitionedCall``; a depthwise convolution is the
    same computation in one op it converts."""
    if not (isinstance(op, keras.layers.Conv2D) and getattr(op, "groups", 1) > 1):
        return None
    k = op.kernel  # (kh, kw, 1, C) for groups == C
    if k.shape[2] != 1 or k.shape[3] != op.groups or op.data_format != "channels_last":
        return None
    strides, dil = tuple(op.strides), tuple(op.dilation_rate)

    def call(x, *a, **kw):
        w = tf.reshape(tf.cast(k, x.dtype), (k.shape[0], k.shape[1], k.shape[3], 1))
        y = tf.nn.depthwise_conv2d(x, w, (1, *strides, 1), op.padding.upper(), dilations=dil)
        if op.use_bias:
            y = y + tf.cast(op.bias, y.dtype)
        return op.activation(y) if op.activation is not None else y

    return call


def _substitute(op, chain: tuple, plan: Plan):
    """The callable evaluating ``op``: the op itself, or a view without softmax / with a ruled ReLU."""
    if plan.export and (dw := exportable(op)) is not None and not same(chain, plan.head):
        return dw
    if same(chain, plan.head):
        if _is_softmax_op(op):
            return lambda *a, **k: a[0]
        v = view(op, activation=keras.activations.linear)
        return lambda *a, **k: v.call(*a)
    if plan.rule == "vanilla":
        return op
    if is_relu_layer(op) or type(op).__name__ in _RELU_OPS:
        plan.relus += 1
        return lambda *a, **k: ruled(lambda t: op(t), plan.rule)(a[0])
    act = getattr(op, "activation", None)
    if isinstance(op, keras.layers.Layer) and is_relu_fn(act):
        plan.relus += 1
        v = view(op, activation=keras.activations.linear)
        return lambda *a, **k: ruled(act, plan.rule)(v.call(*a))
    return op


def _callable(op, prefix: tuple, plan: Plan):
    chain = prefix + (op,)
    if is_graph_model(op):
        f = lambda *a, **k: evaluate(op, a[0], plan, chain)  # noqa: E731 - nested model: walk it too
    else:
        f = _substitute(op, chain, plan)
    if plan.wrap is not None:
        f = plan.wrap(op, chain, f)
    hits = [i for i, t in enumerate(plan.taps) if same(t, chain)]
    if not hits:
        return f

    def tapped(*a, **k):
        y = f(*a, **k)
        for i in hits:
            y = plan.replace.get(i, y)
            plan.values[i] = y
        return y

    return tapped


def evaluate(model, x, plan: Plan, prefix: tuple = ()):
    """The model's output for ``x`` under ``plan`` (tapped values land in ``plan.values``)."""
    if isinstance(model, keras.Sequential):
        for ly in sublayers(model):
            x = _callable(ly, prefix, plan)(x)
        return x
    out = compat.run_through_graph(model, [x], lambda op: _callable(op, prefix, plan))
    return plan.select(out) if plan.select is not None and not prefix else tf.nest.flatten(out)[0]
