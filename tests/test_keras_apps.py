"""from_keras on keras.applications (weights=None, small inputs, 3 classes) and nested transfer models.

Every method runs on MobileNetV2; on Xception and EfficientNetB0 and through a nested model, one
method per adapter path that runs through the app's layers (see ``FAMILIES``); on ResNet50, whose
layers all appear in those apps, Grad-CAM and the automatic layer (see ``EVERY_METHOD_APPS``). Grad-CAM
equals an independent GradientTape computation on a functional model whose outputs are [layer
tensor, output] (the tf-keras-vis way), and the ONNX export's tapped activation and output equal the
Keras model's (on the apps in ``EXPORTED``).
"""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (see tests/onnx_helpers.py)

from agnostic_cam import Explainer
from agnostic_cam.core.capture import Needs
from agnostic_cam.core.imaging import cam_to_heatmap
from agnostic_cam.methods import registry

APPS = {  # constructor, input size, target layer, classifier activation, output=
    "ResNet50": ("ResNet50", 33, "conv5_block3_out", "softmax", "logits"),
    "MobileNetV2": ("MobileNetV2", 40, "out_relu", None, "raw"),
    "EfficientNetB0": ("EfficientNetB0", 40, "top_activation", "softmax", "logits"),
    "Xception": ("Xception", 71, "block14_sepconv2_act", None, "raw"),
}
EVERY_METHOD = "MobileNetV2"  # the cheapest app runs every method

# Reduced for time: what an app adds is its structure (ResNet50's residual add + BN, Xception's
# separable convolutions and strided 1x1 shortcuts, EfficientNet's swish / squeeze-excite, nesting),
# and what meets that structure is the adapter path a method takes, not the NumPy formula on top of
# it (the same for every framework, checked against references elsewhere). So beyond MobileNetV2 one
# method per path that runs through the app's layers: the export's activations (eigencam; the
# export's output is checked against the Keras forward pass too), layer gradients (gradcam), input
# gradients through every layer under a ReLU rule (guided_backprop; saliency is the same backward
# pass without the rule, and deconvnet differs only in the rule's formula, which does not depend on
# the architecture; both rules run on MobileNetV2 here and against the PyTorch twin in
# test_keras_vjp) and bias gradients of every convolution / batch norm (fullgrad). The other paths
# meet no more of an app than these: the tail graph (ablationcam) is what follows the target layer,
# GAP + Dense on every app; forward passes (rise) run the export whose output is checked; a method
# that runs other explanations (sess) runs Grad-CAM; the Hessian-vector product (shapleycam)
# differentiates twice only after the target layer. They run on MobileNetV2 (every method) only.
# test_every_method_runs[MobileNetV2] fails when a method listed for a Keras CNN needs another path.
FAMILIES = ("eigencam", "gradcam", "guided_backprop", "fullgrad")
# The ONNX export (tf2onnx; eigencam's path) and FAMILIES are checked on the apps in EXPORTED:
# ResNet50's layers (Conv2D with bias, BatchNormalization, Activation('relu') after a residual Add,
# ZeroPadding2D, MaxPooling2D, strided 1x1 shortcuts) all appear in MobileNetV2's, Xception's or
# EfficientNetB0's graphs (conv biases: EfficientNet's squeeze-excite convolutions, which FullGrad
# meets there), so on ResNet50 only test_gradcam_matches_gradient_tape and the automatic layer run
# (its export was 5 s of this module; guided backprop and FullGrad on it 6-8 s more).
EXPORTED = ("MobileNetV2", "Xception", "EfficientNetB0")
EVERY_METHOD_APPS = EXPORTED
ONLY_ON_EVERY_METHOD = {Needs.HVP, Needs.TAIL, Needs.FORWARD, "runs explanations"}

# Cheaper settings for the costly methods; every other method, including ones registered later,
# runs with its defaults on two images. The black-box methods score one whole-model forward pass
# per mask / coalition / window / scale: with their defaults (2000 RISE masks, 1000 LIME and
# KernelSHAP coalitions, 12 SESS scales) they took 146 s of the 170 s that every method took on
# Xception (2 loaded cores); here a few masks each, which still runs every path.
LIGHT = {"scorecam": (1, {}), "guided_scorecam": (1, {}), "integrated_gradients": (1, {"steps": 4}),
         "smoothgrad": (1, {"samples": 2}), "rise": (1, {"masks": 16, "cells": 4}),
         "lime": (1, {"segments": 4, "samples": 16}), "kernelshap": (1, {"segments": 4, "samples": 16}),
         "occlusion": (1, {"window": 16, "stride": 16}), "sess": (1, {"num_scales": 2})}


def paths(name: str) -> set:
    """The adapter paths a method takes: its needs (one flag each) and, for input gradients, a ReLU rule."""
    cls = registry()[name]
    got = {flag for flag in Needs if flag in cls.needs}
    if cls.rule != "vanilla":
        got.add("relu rule")
    return got | ({"runs explanations"} if cls.runs_explanations else set())


def run_every_method(ex, x, target, has_relu=True, methods=None):
    for name in ex.methods if methods is None else methods:
        n, opts = LIGHT.get(name, (len(x), {}))
        if not has_relu and registry()[name].rule != "vanilla":  # EfficientNet: swish only, not listed
            assert name not in ex.methods
            with pytest.raises(ValueError, match="backward rule to ReLUs, but this model has none"):
                ex.explain(x[:n], name, target=target[:n] if isinstance(target, list) else target, **opts)
            continue
        exp = ex.explain(x[:n], name, target=target[:n] if isinstance(target, list) else target, **opts)
        assert exp.heatmap.shape == (n, *x.shape[1:3]), name
        assert np.isfinite(exp.heatmap).all() and 0 <= exp.heatmap.min() and exp.heatmap.max() <= 1, name


def reference_gradcam(feature_model, head, x, classes):
    """Independent Grad-CAM: tape over [A, logits] of a plain functional model; (N, h, w) raw map."""
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as t:
        t.watch(xt)
        a, out = head(feature_model(xt))
        t.watch(a)
        s = tf.gather(out, classes, axis=1, batch_dims=1)
    g = t.gradient(s, a).numpy()
    a = a.numpy()
    w = g.mean(axis=(1, 2))                                  # (N, C)
    return np.einsum("nc,nhwc->nhw", w, a), out.numpy()


def logits_head(dense):
    import tensorflow as tf

    return lambda f: tf.matmul(f, dense.kernel) + dense.bias


@pytest.fixture(scope="module", params=list(APPS))
def app(request):
    import keras

    ctor, size, layer, act, output = APPS[request.param]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, ctor)(weights=None, input_shape=(size, size, 3), classes=3,
                                               classifier_activation=act)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    ex = Explainer.from_keras(model, layer, output=output, progress=False)
    return request.param, model, layer, output, x, ex


def test_gradcam_matches_gradient_tape(app):
    import keras

    _, model, layer, output, x, ex = app
    dense = model.get_layer("predictions")
    feats = keras.Model(model.inputs, [model.get_layer(layer).output, dense.input])
    head = logits_head(dense) if output == "logits" else dense
    classes = np.array([2, 0])
    ref_raw, ref_out = reference_gradcam(lambda t: feats(t), lambda af: (af[0], head(af[1])), x, classes)
    exp = ex.explain(x, "gradcam", target=classes)
    np.testing.assert_allclose(exp.outputs, ref_out, atol=1e-4 * (1 + np.abs(ref_out).max()))
    scale = np.abs(ref_raw).max()
    assert scale > 0
    np.testing.assert_allclose(exp.raw, ref_raw, atol=1e-4 * scale)
    np.testing.assert_allclose(exp.heatmap, cam_to_heatmap(ref_raw, x.shape[1:3]), atol=1e-4)


@pytest.mark.parametrize("app", EVERY_METHOD_APPS, indirect=True)
def test_every_method_runs(app):
    name, model, layer, output, x, ex = app
    if name in EXPORTED:
        engine = ex.adapter.engine(x.shape[1:])
        out, act = engine.run(x, ["output", "activation"])
        (ref_act,) = ex.adapter.activations(x, [layer])
        np.testing.assert_allclose(act.transpose(0, 3, 1, 2), ref_act, atol=1e-4 * (1 + np.abs(ref_act).max()))
        keras_out = ex.explain(x, "gradcam", target=1).outputs  # the Keras pass (gradients run in Keras)
        np.testing.assert_allclose(out, keras_out, atol=1e-4 * (1 + np.abs(keras_out).max()))
    if name == EVERY_METHOD:  # FAMILIES and ONLY_ON_EVERY_METHOD: every adapter path a listed method takes
        assert set(FAMILIES) <= set(ex.methods)
        assert set().union(*map(paths, ex.methods)) == set().union(*map(paths, FAMILIES)) | ONLY_ON_EVERY_METHOD
    run_every_method(ex, x, 1, has_relu="efficientnet" not in model.name.lower(),
                     methods=None if name == EVERY_METHOD else FAMILIES)


def test_automatic_layer_is_the_input_of_global_pooling(app):
    """from_keras(model) without a layer picks the layer that feeds the top's global pooling."""
    import keras

    _, model, layer, output, x, ex = app
    pool_input = [ly for ly in model.layers if isinstance(ly, keras.layers.GlobalAveragePooling2D)][-1].input
    feeding = [ly.name for ly in model.layers if ly.output is pool_input]
    auto = Explainer.from_keras(model, output=output, progress=False)
    assert auto.layer == layer == feeding[0]


@pytest.fixture(scope="module")
def nested():
    """Transfer-learning shapes: Sequential([base, GAP, Dense(softmax)]) and a functional wrapper
    calling the base with training=False; the target layer sits inside the base."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(40, 40, 3))
    seq = keras.Sequential([keras.Input((40, 40, 3)), base, layers.GlobalAveragePooling2D(),
                            layers.Dense(3, activation="softmax", name="head")])
    inp = keras.Input((40, 40, 3))
    f = layers.GlobalAveragePooling2D()(base(inp, training=False))
    f = layers.Dense(4, activation="relu", name="hidden")(f)
    fun = keras.Model(inp, layers.Dense(3, name="logits_layer")(f))
    x = np.random.default_rng(2).normal(size=(2, 40, 40, 3)).astype(np.float32)
    return base, seq, fun, x


@pytest.mark.parametrize("which", ["sequential_logits", "sequential_raw", "functional"])
def test_nested_transfer_model(nested, which):
    import keras

    base, seq, fun, x = nested
    model = fun if which == "functional" else seq
    output = "logits" if which == "sequential_logits" else "raw"
    ex = Explainer.from_keras(model, "out_relu", output=output, progress=False)
    assert ex.layer == "out_relu" == Explainer.from_keras(model, output=output, progress=False).layer  # inside the base
    inner = keras.Model(base.inputs, [base.get_layer("out_relu").output, base.output])
    gap = keras.layers.GlobalAveragePooling2D()
    if which == "functional":
        head = lambda f: fun.get_layer("logits_layer")(fun.get_layer("hidden")(gap(f)))  # noqa: E731
    elif output == "logits":
        head = lambda f: logits_head(seq.get_layer("head"))(gap(f))  # noqa: E731
    else:
        head = lambda f: seq.get_layer("head")(gap(f))  # noqa: E731
    classes = np.array([1, 2])
    ref_raw, ref_out = reference_gradcam(lambda t: inner(t), lambda af: (af[0], head(af[1])), x, classes)
    exp = ex.explain(x, "gradcam", target=classes)
    np.testing.assert_allclose(exp.outputs, ref_out, atol=1e-5)
    np.testing.assert_allclose(exp.raw, ref_raw, atol=1e-4 * np.abs(ref_raw).max())
    if which == "sequential_logits":
        np.testing.assert_allclose(ex.predict(x), ref_out, atol=1e-4)  # ONNX export also gives logits
        run_every_method(ex, x, [1, 2], methods=FAMILIES)  # every method: on the plain MobileNetV2
