"""from_keras: bad input gives a clear error, and explaining never changes the user's model."""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (see tests/onnx_helpers.py)

from agnostic_cam import Explainer
from agnostic_cam.targets import TargetSpec

S = 24


def small(softmax: bool = False, name: str = "small"):
    import keras
    from keras import layers

    inp = keras.Input((S, S, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="feat")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(4, activation="softmax" if softmax else None, name="fc")(x)
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(5)
    return small()


@pytest.fixture(scope="module")
def ex(model):
    return Explainer.from_keras(model, "feat", progress=False)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(2, S, S, 3)).astype(np.float32)


@pytest.mark.parametrize("images, err, match", [
    (lambda x: x.transpose(0, 3, 1, 2), ValueError, r"channels-first \(NCHW\).*transpose\(0, 2, 3, 1\)"),
    (lambda x: x[0], ValueError, r"rank-4.*images\[None\]"),
    (lambda x: x[..., :2], ValueError, "expects 3 channels"),
    (lambda x: (x * 255).astype(np.uint8), TypeError, "floating point"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x).astype(np.float32), ValueError, "NaN"),
    (lambda x: np.zeros((1, S + 8, S + 8, 3), np.float32), ValueError, r"size \(24, 24\)"),
])
def test_bad_images(ex, x, images, err, match):
    with pytest.raises(err, match=match):
        ex.explain(images(x), "gradcam")


@pytest.mark.parametrize("kwargs, err, match", [
    ({"target": 4}, ValueError, r"out of range.*0\.\.3"),
    ({"target": [0, 1, 2]}, ValueError, "3 class indices but the batch has 2"),
    ({"method": "gradcam+"}, ValueError, "Did you mean"),
    ({"target": lambda out: out[:, :2]}, ValueError, r"2 scores \(one per image\)"),
])
def test_bad_targets_and_methods(ex, x, kwargs, err, match):
    kwargs = {"method": "gradcam", **kwargs}
    with pytest.raises(err, match=match):
        ex.explain(x, **kwargs)


def test_bad_layers_and_models(model):
    import keras
    from keras import layers

    with pytest.raises(ValueError, match=r"no layer named 'feats'; closest names: 'feat'"):
        Explainer.from_keras(model, "feats")
    with pytest.raises(ValueError, match=r"'gap' outputs shape \(None, 8\), not a spatial.*'feat'"):
        Explainer.from_keras(model, "gap")
    with pytest.raises(ValueError, match="not part of the model"):
        Explainer.from_keras(model, layers.ReLU(name="feat"))
    with pytest.raises(TypeError, match="layer name or a keras layer"):
        Explainer.from_keras(model, 3)
    with pytest.raises(ValueError, match="'raw'.*'logits'"):
        Explainer.from_keras(model, "feat", output="probs")
    with pytest.raises(ValueError, match="ends in a softmax.*output='raw'"):
        Explainer.from_keras(model, "feat", output="logits")
    with pytest.raises(TypeError, match="expects a keras.Model"):
        Explainer.from_keras(torch.nn.Conv2d(3, 3, 1), "feat")
    unbuilt = keras.Sequential([layers.Conv2D(4, 3, name="c"), layers.GlobalAveragePooling2D(), layers.Dense(2)])
    with pytest.raises(ValueError, match="never been built or called"):
        Explainer.from_keras(unbuilt, "c")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.c = layers.Conv2D(4, 3)
            self.d = layers.Dense(2)

        def call(self, t):
            return self.d(keras.ops.mean(self.c(t), axis=(1, 2)))

    sub = Sub()
    sub(np.zeros((1, S, S, 3), np.float32))
    with pytest.raises(TypeError, match="subclassed"):
        Explainer.from_keras(sub, sub.c)
    tiny_in = small(name="tiny_in")
    with pytest.raises(ValueError, match="1x1 map"):  # 24 px through Conv2D 'valid' 24x24 kernel
        inp = keras.Input((S, S, 3))
        Explainer.from_keras(keras.Model(inp, layers.Dense(2)(layers.Flatten()(
            layers.Conv2D(3, S, name="whole")(inp)))), "whole")
    assert Explainer.from_keras(tiny_in, tiny_in.get_layer("conv2")).layer == "conv2"


def test_same_name_in_two_nested_models_asks_for_the_path(x):
    import keras
    from keras import layers

    keras.utils.set_random_seed(6)
    a, b = small(name="a"), small(name="b")
    inp = keras.Input((S, S, 3))
    model = keras.Model(inp, layers.Add()([a(inp), b(inp)]))
    with pytest.raises(ValueError, match=r"several nested models; pass its path instead: 'a/feat', 'b/feat'"):
        Explainer.from_keras(model, "feat")
    ex = Explainer.from_keras(model, "b/feat", progress=False)
    assert ex.layer == "b/feat" and "a/feat" in ex.adapter.layer_names()
    listed = {c.name: c for c in ex.layers()}
    assert {"a/feat", "b/feat", "a/conv1", "b/conv2"} <= set(listed) and "a/gap" not in listed
    assert listed["b/feat"].layout == "NHWC" and len(listed["b/feat"].shape) == 4
    # a's head does not depend on b's activations, so at b/feat: the gradients equal b's own, and
    # Ablation-CAM's y - y_c (raw map times the score y) equals b's own on the ONNX tail graph
    own_ex = Explainer.from_keras(b, "feat", progress=False)
    np.testing.assert_allclose(ex.explain(x, "gradcam", target=1).raw, own_ex.explain(x, "gradcam", target=1).raw,
                               atol=1e-5)
    got, own = ex.explain(x, "ablationcam", target=1), own_ex.explain(x, "ablationcam", target=1)
    np.testing.assert_allclose(got.raw * got.scores[:, None, None], own.raw * own.scores[:, None, None], atol=1e-4)
    assert np.abs(got.scores - own.scores).max() > 1e-3  # the sum differs from b's output alone


def snapshot(model):
    return {
        "weights": [w.copy() for w in model.get_weights()],
        "layers": [(ly.name, ly.trainable, getattr(ly, "activation", None), len(ly._inbound_nodes))
                   for ly in model._flatten_layers(include_self=False)],
        "trainable": model.trainable,
        "n_layers": len(model.layers),
    }


def test_model_unchanged_after_success_and_errors(x):
    import keras

    keras.utils.set_random_seed(7)
    m = small(softmax=True, name="state")
    m.get_layer("conv1").trainable = False  # the user froze part of it
    before = snapshot(m)
    ex = Explainer.from_keras(m, "feat", output="logits", progress=False)
    for name in ex.methods:
        ex.explain(x, name, target=[0, 3])
    for rule in ("guided", "deconv"):
        ex.adapter.input_gradients(x, TargetSpec(1, 2), rule)
    for bad in (lambda: ex.explain(x, "gradcam", target=9), lambda: ex.explain(x[0], "scorecam"),
                lambda: ex.explain(x, "gradcam", target=lambda out: out.nonexistent)):
        with pytest.raises((ValueError, TypeError, AttributeError)):
            bad()
    after = snapshot(m)
    assert before["layers"] == after["layers"] and before["trainable"] == after["trainable"]
    assert before["n_layers"] == after["n_layers"]
    for a, b in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(a, b)
    # the model still returns probabilities (the logits view did not leak into it)
    np.testing.assert_allclose(m(x).numpy().sum(axis=1), 1, atol=1e-5)


def test_onnx_export_refreshed_after_weights_change(x):
    import keras

    keras.utils.set_random_seed(8)
    m = small(name="refresh")
    ex = Explainer.from_keras(m, "feat", progress=False)
    a = ex.predict(x)
    np.testing.assert_allclose(a, m(x).numpy(), atol=1e-5)
    w, b = m.get_layer("fc").get_weights()
    m.get_layer("fc").set_weights([w * 2, b + 1])
    np.testing.assert_allclose(ex.predict(x), m(x).numpy(), atol=1e-5)
    assert np.abs(ex.predict(x) - a).max() > 1e-3


def test_dynamic_input_size_and_sequential_built_by_call():
    """A model taking any image size (one export per size, one compiled backward for all) and a
    Sequential model built by calling it on data (no keras.Input)."""
    import keras
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(9)
    inp = keras.Input((None, None, 3))
    feat = layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(inp)
    dyn = keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(feat)))
    seq = keras.Sequential([layers.Conv2D(4, 3, name="c"), layers.ReLU(name="r"), layers.GlobalAveragePooling2D(),
                            layers.Dense(2)])
    seq(np.zeros((1, 12, 12, 3), np.float32))
    for model, layer, sizes in ((dyn, "c", (16, 23)), (seq, "r", (12,))):
        ex = Explainer.from_keras(model, layer, progress=False)
        ref_model = keras.Model(model.inputs[0], [model.get_layer(layer).output, model.outputs[0]])
        for s in sizes:
            x = np.random.default_rng(s).normal(size=(2, s, s, 3)).astype(np.float32)
            xt = tf.constant(x)
            with tf.GradientTape() as t:
                t.watch(xt)
                a, out = ref_model(xt)
                score = out[:, 1]
            g = t.gradient(score, a).numpy()
            ref = np.einsum("nc,nhwc->nhw", g.mean(axis=(1, 2)), a.numpy())
            got = ex.explain(x, "gradcam", target=1)
            np.testing.assert_allclose(got.raw, ref, atol=1e-5 * np.abs(ref).max())
            assert ex.explain(x, "eigencam").heatmap.shape == (2, s, s)


def test_threads_and_non_finite_weights(x):
    """Issue #11 items 1 and 3 on Keras: two threads share one explainer (first export included),
    and a NaN weight is named instead of giving a map. Reduced: the 24 px model above."""
    import keras
    from test_reliability_model import assert_no_errors, in_threads

    from agnostic_cam.errors import NonFiniteError

    keras.utils.set_random_seed(6)
    m = small(name="threads")
    ex = Explainer.from_keras(m, "feat", progress=False)
    before = [w.numpy().copy() for w in m.weights]
    out = in_threads(*(lambda meth=meth: [ex.explain(x, meth, target=1).heatmap for _ in range(3)]
                       for meth in ("eigencam", "gradcam")))
    assert_no_errors(out)
    np.testing.assert_allclose(out[0][0], ex.explain(x, "eigencam", target=1).heatmap, atol=1e-6)
    np.testing.assert_allclose(out[1][2], ex.explain(x, "gradcam", target=1).heatmap, atol=1e-6)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, m.weights))
    kernel = m.get_layer("conv2").kernel
    kernel.assign(np.where(np.arange(kernel.numpy().size).reshape(kernel.shape) == 3, np.nan, kernel.numpy()))
    for method in ("eigencam", "gradcam"):
        with pytest.raises(NonFiniteError, match="NaN"):
            ex.explain(x, method)
