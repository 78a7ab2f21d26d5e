"""from_keras(output="logits"): the scores before a final softmax, whatever form the softmax takes,
without changing the model; output="raw" keeps the model's own (probability) output."""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (see tests/onnx_helpers.py)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget  # imports torchvision: before TF

from agnostic_cam import Explainer

S = 20
HEADS = ["dense_softmax", "softmax_layer", "activation_softmax", "keras_ops_softmax", "nested"]


def build(head: str):
    import keras
    from keras import layers

    keras.utils.set_random_seed(11)
    inp = keras.Input((S, S, 3))
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="feat")(inp)
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(5, activation="softmax" if head in ("dense_softmax", "nested") else None, name="fc")
    y = dense(x)
    if head == "softmax_layer":
        y = layers.Softmax()(y)
    elif head == "activation_softmax":
        y = layers.Activation("softmax")(y)
    elif head == "keras_ops_softmax":
        y = keras.ops.softmax(y)
    model = keras.Model(inp, y)
    if head == "nested":
        model = keras.Sequential([keras.Input((S, S, 3)), model])
    return model, dense


@pytest.mark.parametrize("head", HEADS)
def test_logits_before_softmax(head):
    import tensorflow as tf

    model, dense = build(head)
    x = np.random.default_rng(0).normal(size=(3, S, S, 3)).astype(np.float32)
    probs_before = model(x).numpy()
    ex = Explainer.from_keras(model, "feat", output="logits", progress=False)
    exp = ex.explain(x, "gradcam", target=[0, 2, 4])
    # independent logits: the GAP features times the Dense kernel, by hand
    feat_layer = ex.adapter.layer
    xt = tf.constant(x)
    with tf.GradientTape() as t:
        t.watch(xt)
        a = feat_layer(xt)  # the first layer: its input is the image
        t.watch(a)
        logits = tf.reduce_mean(a, axis=(1, 2)) @ dense.kernel + dense.bias
        s = tf.gather(logits, [0, 2, 4], axis=1, batch_dims=1)
    g = t.gradient(s, a).numpy()
    ref_raw = np.einsum("nc,nhwc->nhw", g.mean(axis=(1, 2)), a.numpy())
    np.testing.assert_allclose(exp.outputs, logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(exp.raw, ref_raw, atol=1e-5 * np.abs(ref_raw).max())
    np.testing.assert_allclose(ex.predict(x), logits.numpy(), atol=1e-5)  # ONNX export too
    np.testing.assert_allclose(exp.scores, logits.numpy()[np.arange(3), [0, 2, 4]], atol=1e-5)
    # the model itself still returns probabilities, and output='raw' explains those
    np.testing.assert_allclose(model(x).numpy(), probs_before, atol=1e-6)
    np.testing.assert_allclose(probs_before.sum(axis=1), 1, atol=1e-5)
    raw = Explainer.from_keras(model, "feat", progress=False)
    np.testing.assert_allclose(raw.explain(x, "gradcam", target=0).outputs, probs_before, atol=1e-5)
    np.testing.assert_allclose(raw.predict(x), probs_before, atol=1e-5)


def test_tf_tensor_and_softmax_object_targets():
    """TensorFlow tensors as class indices; pytorch-grad-cam's softmax target object on a Keras model
    equals the softmax of the logits, scored by the gradient path (TF tensors) and a forward method (NumPy)."""
    import tensorflow as tf

    model, _ = build("dense_softmax")
    x = np.random.default_rng(1).normal(size=(2, S, S, 3)).astype(np.float32)
    ex = Explainer.from_keras(model, output="logits", progress=False)
    assert ex.layer == "feat"  # picked automatically: the last spatial map before pooling
    ref = ex.explain(x, "gradcam", target=[1, 3])
    np.testing.assert_array_equal(ex.explain(x, "gradcam", target=tf.constant([1, 3])).heatmap, ref.heatmap)
    sm = ex.explain(x, "gradcam", targets=[ClassifierOutputSoftmaxTarget(3)])
    fw = ex.explain(x, "scorecam", targets=[ClassifierOutputSoftmaxTarget(3)])
    np.testing.assert_allclose(sm.scores, model(x).numpy()[:, 3], rtol=1e-4)
    np.testing.assert_allclose(fw.scores, sm.scores, rtol=1e-4)
    with tf.GradientTape() as t:  # Grad-CAM of the softmax score by hand
        a = ex.adapter.layer(tf.constant(x))
        t.watch(a)
        p = model.get_layer("fc")(tf.reduce_mean(a, axis=(1, 2)))[:, 3]
    g = t.gradient(p, a).numpy()
    np.testing.assert_allclose(sm.raw, np.einsum("nc,nhwc->nhw", g.mean(axis=(1, 2)), a.numpy()), atol=1e-6)


def two_outputs(kind: str):
    """A 2-output model (dict or list outputs): 'cls' a softmax over 5 classes, 'box' 4 linear values."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(12)
    inp = keras.Input((S, S, 3))
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="feat")(inp)
    x = layers.GlobalAveragePooling2D()(x)
    cls = layers.Dense(5, activation="softmax", name="cls")(x)
    box = layers.Dense(4, name="box")(x)
    return keras.Model(inp, {"cls": cls, "box": box} if kind == "dict" else [cls, box])


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_output_selects_one_output_of_a_multi_output_model(kind):
    """output=KEY / INDEX / layer name picks the explained output (compared with model(x)[key]);
    'logits:KEY' its scores before the softmax; with several outputs, 'raw' asks which one."""
    import keras

    from agnostic_cam.errors import ModelError, OptionError

    model = two_outputs(kind)
    x = np.random.default_rng(3).uniform(size=(2, S, S, 3)).astype(np.float32)
    ref = model(x)
    ref = {"cls": ref["cls"], "box": ref["box"]} if kind == "dict" else {"cls": ref[0], "box": ref[1]}
    keys = {"cls": "cls", "box": "box"} if kind == "dict" else {"cls": 0, "box": 1}
    for name, key in keys.items():
        ex = Explainer.from_keras(model, "feat", output=key, progress=False)
        np.testing.assert_allclose(ex.predict(x), ref[name].numpy(), atol=1e-5)
    if kind == "list":  # list outputs: the output layer's name works too
        ex = Explainer.from_keras(model, "feat", output="box", progress=False)
        np.testing.assert_allclose(ex.predict(x), ref["box"].numpy(), atol=1e-5)
    feats = keras.Model(model.inputs[0], model.get_layer("feat").output)(x)
    pooled = keras.ops.mean(feats, axis=(1, 2))
    dense = model.get_layer("cls")
    logits = (pooled @ dense.kernel + dense.bias).numpy()
    ex = Explainer.from_keras(model, "feat", output=f"logits:{keys['cls']}", progress=False)
    np.testing.assert_allclose(ex.predict(x), logits, atol=1e-5)
    e = ex.explain(x, "gradcam", target=2)  # gradients through the selected head
    np.testing.assert_allclose(e.scores, logits[:, 2], atol=1e-5)
    box = Explainer.from_keras(model, "feat", output=keys["box"], progress=False).explain(
        x, "scorecam", target=lambda o: o[:, 0] + o[:, 3])
    np.testing.assert_allclose(box.scores, ref["box"].numpy()[:, 0] + ref["box"].numpy()[:, 3], atol=1e-5)
    with pytest.raises(ModelError, match="choose the one to explain with output=KEY"):
        Explainer.from_keras(model, "feat", progress=False)
    with pytest.raises(OptionError, match="no output"):
        Explainer.from_keras(model, "feat", output="nope", progress=False)
    with pytest.raises(OptionError):
        Explainer.from_keras(model, "feat", output=5, progress=False)
    with pytest.raises(ModelError, match="softmax"):
        Explainer.from_keras(model, "feat", output=f"logits:{keys['box']}", progress=False)
