"""Keras gradients never run weight-gradient kernels (the oneDNN crash defence, see adapters/keras.py).

The risky case - a mini-Xception whose residual shortcut is a 1x1 stride-2 'same' convolution, at
an odd input size - runs in a subprocess, so a crash in a TensorFlow kernel fails this test instead
of killing the test session. The subprocess runs with ONEDNN_VERBOSE=1, so oneDNN logs every
primitive it executes: while explaining, convolutions may run 'backward_data' (d/dinput) but never
'backward_weights'; a plain eager GradientTape afterwards does run them (the check is sensitive).
Every GradientTape.gradient call is also recorded with the number of variables its tape watched.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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
print("EXPLAIN", flush=True)
maps = {m: float(ex.explain(images, m, target=[0, 1, 2]).heatmap.mean()) for m in grad_methods}
for rule in ("vanilla", "guided", "deconv"):
    g = ex.adapter.input_gradients(images, TargetSpec(lambda out: out[:, 0] - out[:, 1], 3), rule)
    maps[rule] = float(np.abs(g.input_grads).mean())
print("RESULT " + json.dumps({"watched": watched, "maps": maps}), flush=True)
print("EAGER-CONTROL", flush=True)
xt = tf.constant(images)
with tf.GradientTape(watch_accessed_variables=False) as t:
    t.watch(xt)
    y = tf.reduce_sum(model(xt))
t.gradient(y, xt)
"""


def conv_primitives(lines: list[str]) -> dict[str, int]:
    counts = {"backward_data": 0, "backward_weights": 0}
    for line in lines:
        if line.startswith("onednn_verbose") and ",convolution," in line:
            for k in counts:
                counts[k] += f",{k}," in line
    return counts


def test_risky_backward_runs_without_weight_gradients():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "ONEDNN_VERBOSE": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    explain, result, control = (next(i for i, line in enumerate(lines) if line.startswith(m))
                                for m in ("EXPLAIN", "RESULT", "EAGER-CONTROL"))
    res = json.loads(lines[result][len("RESULT "):])
    assert len(res["maps"]) == 10
    assert all(v > 0 for v in res["maps"].values()), res["maps"]
    assert len(res["watched"]) >= 8 and set(res["watched"]) == {0}, res["watched"]
    during = conv_primitives(lines[explain:result])
    assert during["backward_data"] > 0 and during["backward_weights"] == 0, during
    assert conv_primitives(lines[control:])["backward_weights"] > 0  # an eager tape runs them
