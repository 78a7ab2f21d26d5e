"""Keras gradients never compute weight gradients (the oneDNN crash defence, see adapters/keras/adapter.py).

The risky case - a mini-Xception whose residual shortcut is a 1x1 stride-2 'same' convolution, at
an odd input size - runs in this test process (its TensorFlow is already imported: a subprocess spent
9 of its 11 s importing it again). A crash in a TensorFlow kernel kills the process: under ``make
test`` pytest-xdist reports the crashed worker as this test's failure and goes on with a new worker;
run alone, the session stops with the crash. tests/test_cpu_kinds.py runs the same script again in
a subprocess with oneDNN capped at AVX2. What the defence guarantees is checked, not which oneDNN
kernel a CPU happens to pick (an AVX2 CPU runs other primitives than an AVX-512 one):
- the risky backward passes run and give the right gradient: the input gradient of a logit
  difference equals an eager GradientTape's d(log p0 - log p1)/dx on the softmax model (the same
  quantity: log-softmax differences are logit differences), computed outside the library;
- no weight gradient is computed: every GradientTape the library opens watches no variable, and in
  every compiled backward graph no weight-gradient op (Conv2DBackpropFilter, depthwise filter
  gradient, BiasAddGrad) is reachable from the function's outputs - TensorFlow runs a function by
  pruning what its outputs do not need. The graphs do contain such ops (unreachable), and the same
  walk finds them reachable in a control function that asks for the weight gradients.
"""
import json

import torch  # noqa: F401 - torch before TensorFlow (see tests/onnx_helpers.py)

SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf
import keras
from keras import layers
from agnostic_cam import Explainer
from agnostic_cam.targets import TargetSpec

watched = []
_gradient = tf.GradientTape.gradient

def gradient(self, *args, **kwargs):
    watched.append(len(self.watched_variables()))
    return _gradient(self, *args, **kwargs)

tf.GradientTape.gradient = gradient
keras.utils.set_random_seed(0)
S = 75
inp = keras.Input((S, S, 3))
x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
x = layers.BatchNormalization()(x)
x = layers.Activation("relu")(x)
prev = x
for i, size in enumerate((32, 64)):
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(size, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(size, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    residual = layers.Conv2D(size, 1, strides=2, padding="same")(prev)  # the risky shortcut
    x = layers.add([x, residual], name=f"block{i}_out")
    prev = x
x = layers.GlobalAveragePooling2D()(x)
model = keras.Model(inp, layers.Dense(3, activation="softmax")(x))
images = np.random.default_rng(0).normal(size=(3, S, S, 3)).astype(np.float32)
ex = Explainer.from_keras(model, "block1_out", output="logits", progress=False)
grad_methods = [m for m in ex.methods if m in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam",
                                                "shapleycam", "fullgrad")]  # nested tapes, every bias layer
maps = {m: float(ex.explain(images, m, target=[0, 1, 2]).heatmap.mean()) for m in grad_methods}
for rule in ("vanilla", "guided", "deconv"):
    g = ex.adapter.input_gradients(images, TargetSpec(lambda out: out[:, 0] - out[:, 1], 3), rule)
    maps[rule] = float(np.abs(g.input_grads).mean())
    grads = g.input_grads if rule == "vanilla" else grads
lib_watched = list(watched)  # every tape the library opened
xt = tf.constant(images)
with tf.GradientTape() as t:  # the independent reference: eager, outside the library
    t.watch(xt)
    logp = tf.math.log(model(xt))
    y = tf.reduce_sum(logp[:, 0] - logp[:, 1])
ref = t.gradient(y, xt).numpy()
err = float(np.abs(grads - ref).max() / np.abs(ref).max())

WEIGHT_GRADS = {"Conv2DBackpropFilter", "Conv2DBackpropFilterV2", "DepthwiseConv2dNativeBackpropFilter",
                "BiasAddGrad"}

def weight_grad_ops(cf):
    # (weight-gradient ops in the graph, those reachable from its outputs and control outputs)
    ops = cf.graph.get_operations()
    seen, todo = set(), [t.op for t in cf.outputs] + list(cf.graph.control_outputs)
    while todo:
        op = todo.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        todo += [t.op for t in op.inputs] + list(op.control_inputs)
    present = [op.name for op in ops if op.type in WEIGHT_GRADS]
    return present, [n for n in present if n in seen]

graphs = [weight_grad_ops(f.get_concrete_function()) for f in ex.adapter._compiled.values()]
spec = tf.TensorSpec((None, S, S, 3), tf.float32)

@tf.function(input_signature=[spec], autograph=False)
def control(x):
    with tf.GradientTape() as t:
        y = tf.reduce_sum(model(x))
    return t.gradient(y, model.trainable_variables)

print("RESULT " + json.dumps({"watched": lib_watched, "maps": maps, "err": err, "graphs": graphs,
                              "control": weight_grad_ops(control.get_concrete_function())}), flush=True)
"""


def test_risky_backward_runs_without_weight_gradients(capsys):
    import tensorflow as tf

    gradient = tf.GradientTape.gradient  # SCRIPT wraps it to count watched variables: put back after
    try:
        exec(compile(SCRIPT, "test_keras_crash_defence.SCRIPT", "exec"), {"__name__": "__crash_defence__"})
    finally:
        tf.GradientTape.gradient = gradient
    check_result(capsys.readouterr().out)


def check_result(stdout: str) -> None:
    """What the defence guarantees, from the ``RESULT`` line SCRIPT printed (tests/test_cpu_kinds.py runs
    SCRIPT in its AVX2-capped process and checks it here too)."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, stdout[-3000:]
    res = json.loads(line[len("RESULT "):])
    assert len(res["maps"]) == 10
    assert all(v > 0 for v in res["maps"].values()), res["maps"]
    # float32 backward through ~10 layers (n ~ 600 terms per path): lambda sqrt(n) u ~ 1e-5 of the
    # path sums; both sides round, and the eager side goes through log(softmax): 1e-4
    assert res["err"] <= 1e-4, res["err"]
    assert len(res["watched"]) >= 8 and set(res["watched"]) == {0}, res["watched"]
    assert len(res["graphs"]) >= 5
    assert all(reachable == [] for _, reachable in res["graphs"]), res["graphs"]
    assert any(present for present, _ in res["graphs"])  # the ops are there; pruning leaves them out
    present, reachable = res["control"]
    assert reachable and reachable == present  # the walk finds them where the outputs need them
