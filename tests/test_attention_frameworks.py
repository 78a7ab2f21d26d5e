"""One ViT, three front doors: a Keras ViT built from keras.layers (MultiHeadAttention) and the same
weights in a PyTorch ViT with SDPA attention and in its ONNX file give the same Chefer, rollout and
LeGrad maps (issue 25: the attention is found in each graph, never hand-named)."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.demo.tiny import tiny_vit  # noqa: E402

D, HEADS, DK = 32, 2, 16


def keras_vit(keras):
    from keras import layers

    class Tokens(layers.Layer):
        def build(self, shape):
            self.cls = self.add_weight(shape=(1, 1, D), name="cls")
            self.pos = self.add_weight(shape=(1, 17, D), name="pos")

        def call(self, x):
            n = keras.ops.shape(x)[0]
            return keras.ops.concatenate([keras.ops.broadcast_to(self.cls, (n, 1, D)), x], axis=1) + self.pos

    inp = keras.Input((32, 32, 3))
    t = Tokens(name="tok")(layers.Reshape((16, D))(layers.Conv2D(D, 8, strides=8, name="patch")(inp)))
    for i in range(2):
        y = layers.LayerNormalization(epsilon=1e-5, name=f"ln1_{i}")(t)
        t = layers.Add()([t, layers.MultiHeadAttention(HEADS, DK, name=f"mha_{i}")(y, y)])
        y = layers.LayerNormalization(epsilon=1e-5, name=f"ln2_{i}")(t)
        y = layers.Dense(D, name=f"fc2_{i}")(layers.Dense(2 * D, activation="gelu", name=f"fc1_{i}")(y))
        t = layers.Add(name=f"block{i}")([t, y])
    t = layers.LayerNormalization(epsilon=1e-5, name="norm")(t)
    return keras.Model(inp, layers.Dense(4, name="head")(t[:, 0]))


def copy_weights(km, tm) -> None:
    """The PyTorch ViT's weights into the Keras one (same function, each framework's conventions)."""
    def np_(p):
        return p.detach().numpy()

    def dense(name, lin):
        km.get_layer(name).set_weights([np_(lin.weight).T, np_(lin.bias)])

    km.get_layer("patch").set_weights([np_(tm.patch.weight).transpose(2, 3, 1, 0), np_(tm.patch.bias)])
    km.get_layer("tok").set_weights([np_(tm.cls), np_(tm.pos)])
    for i, b in enumerate(tm.blocks):
        for ln, tln in ((f"ln1_{i}", b.norm1), (f"ln2_{i}", b.norm2)):
            km.get_layer(ln).set_weights([np_(tln.weight), np_(tln.bias)])
        w, bias = np_(b.qkv.weight), np_(b.qkv.bias)  # rows: (q|k|v, head, dk)
        qkv = [(w[j * D:(j + 1) * D].T.reshape(D, HEADS, DK), bias[j * D:(j + 1) * D].reshape(HEADS, DK))
               for j in range(3)]
        out = (np_(b.proj.weight).T.reshape(HEADS, DK, D), np_(b.proj.bias))
        km.get_layer(f"mha_{i}").set_weights([a for pair in (*qkv, out) for a in pair])
        dense(f"fc1_{i}", b.mlp[0])
        dense(f"fc2_{i}", b.mlp[2])
    km.get_layer("norm").set_weights([np_(tm.norm.weight), np_(tm.norm.bias)])
    dense("head", tm.head)


@pytest.fixture(scope="module")
def three(torch):
    keras = pytest.importorskip("keras")
    from agnostic_cam import compat

    tm = tiny_vit()
    km = keras_vit(keras)
    copy_weights(km, tm)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(km.predict(x.transpose(0, 2, 3, 1), verbose=0), want, atol=1e-4)  # same function
    buf = io.BytesIO()
    compat.torch_onnx_export_legacy(tm, (torch.zeros(1, 3, 32, 32),), buf, opset_version=17, input_names=["x"],
                                    dynamic_axes={"x": {0: "n"}})
    return x, {
        "torch": (Explainer.from_torch(tm, input_shape=(3, 32, 32), progress=False), x),
        "onnx": (Explainer.from_onnx(buf.getvalue(), progress=False), x),
        "keras": (Explainer.from_keras(km, "block1", layer_layout="tokens", progress=False), x.transpose(0, 2, 3, 1)),
    }


@pytest.mark.parametrize("method,options", [("chefer", {"target": 1}), ("legrad", {"target": 2}),
                                            ("attention_rollout", {"head_fusion": "max", "discard_ratio": 0.5})])
def test_frameworks_agree(three, method, options):
    _, exs = three
    maps = {}
    for fw, (ex, x) in exs.items():
        assert [a.block for a in ex.layers(kind="attention")] == [0, 1], fw
        maps[fw] = ex.explain(x, method, **options).raw
    ref = maps["torch"]
    assert ref.shape == (2, 4, 4) and np.ptp(ref) > 0
    for fw in ("onnx", "keras"):
        err = float(np.abs(maps[fw] - ref).max() / np.abs(ref).max())
        assert err <= 1e-4, (fw, err)
