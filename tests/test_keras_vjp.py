"""KerasAdapter.vjp / activations / layer_names / conv_weights / input_gradients (shared contract).

vanilla is checked against a direct GradientTape computation; guided/deconv against the PyTorch
twin's TorchAdapter.vjp (same weights) and a hand-written stage-wise TF backward. Every kind of
ReLU is present: Conv2D(activation="relu"), layers.ReLU, Activation("relu"), keras.ops.relu,
Dense(activation="relu").
"""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (see tests/onnx_helpers.py)
from torch import nn

from agnostic_cam.adapters.pytorch.adapter import TorchAdapter
from agnostic_cam.targets import TargetSpec

S = 9  # odd: Keras 'same' stride-2 padding is then symmetric, like torch padding=1


@pytest.fixture(scope="session")
def tiny():
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inp = keras.Input((S, S, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = layers.Conv2D(5, 3, padding="same", name="c2")(x)
    x = layers.ReLU(name="r2")(x)
    x = layers.Conv2D(6, 3, strides=2, padding="same", name="c3")(x)
    x = layers.Activation("relu", name="a3")(x)
    x = layers.Conv2D(6, 1, name="c4")(x)
    x = keras.ops.relu(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(7, activation="relu", name="d1")(x)
    out = layers.Dense(3, name="out")(x)
    model = keras.Model(inp, out)
    for ly in model.layers:  # biases away from zero so that ReLUs cut somewhere
        if getattr(ly, "bias", None) is not None:
            ly.bias.assign(np.random.default_rng(len(ly.name)).normal(0, 0.3, ly.bias.shape).astype(np.float32))
    return model


def torch_twin(k):
    """The tiny model in PyTorch, weights copied from Keras (F.relu, nn.ReLU and torch.relu)."""

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 5, 3, padding=1)
            self.r2 = nn.ReLU()
            self.c3 = nn.Conv2d(5, 6, 3, stride=2, padding=1)
            self.c4 = nn.Conv2d(6, 6, 1)
            self.d1 = nn.Linear(6, 7)
            self.out = nn.Linear(7, 3)

        def forward(self, x):
            x = self.r2(self.c2(nn.functional.relu(self.c1(x))))
            x = torch.relu(self.c4(torch.relu(self.c3(x))))
            return self.out(nn.functional.relu(self.d1(x.mean(dim=(2, 3)))))

    t = Twin().eval()
    with torch.no_grad():
        for name in ("c1", "c2", "c3", "c4"):
            w, b = k.get_layer(name).get_weights()
            getattr(t, name).weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1)))
            getattr(t, name).bias.copy_(torch.from_numpy(b))
        for name in ("d1", "out"):
            w, b = k.get_layer(name).get_weights()
            getattr(t, name).weight.copy_(torch.from_numpy(w.T))
            getattr(t, name).bias.copy_(torch.from_numpy(b))
    return t


@pytest.fixture(scope="session")
def adapters(tiny):
    from agnostic_cam.adapters.keras.adapter import KerasAdapter

    return KerasAdapter(tiny, "a3"), TorchAdapter(torch_twin(tiny), "c3")


@pytest.fixture(scope="session")
def x():
    return np.random.default_rng(0).normal(size=(2, S, S, 3)).astype(np.float32)


def cos_like(a):
    """A fixed cotangent of a's shape with both signs."""
    return np.cos(np.arange(a.size, dtype=np.float32) * 0.7).reshape(a.shape)


def nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def state(model):
    return ([w.copy() for w in model.get_weights()],
            [(ly.name, ly.trainable, getattr(ly, "activation", None)) for ly in model.layers])


def test_twin_forward_matches(adapters, tiny, x):
    np.testing.assert_allclose(tiny(x).numpy(), adapters[1].model(torch.from_numpy(nchw(x))).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("layer", [None, "c2", "a3", "gap"])
def test_vanilla_matches_gradient_tape(adapters, tiny, x, layer):
    import keras
    import tensorflow as tf

    ka = adapters[0]
    ref_model = tiny if layer is None else keras.Model(tiny.inputs[0], tiny.get_layer(layer).output)
    a, gx = ka.vjp(x, layer, cos_like)
    xt = tf.constant(x)
    with tf.GradientTape() as t:
        t.watch(xt)
        ref = ref_model(xt)
    ref_a = ref.numpy() if ref.ndim == 2 else nchw(ref.numpy())
    cot = cos_like(ref_a)
    cot_native = np.ascontiguousarray(cot.transpose(0, 2, 3, 1)) if cot.ndim == 4 else cot
    ref_g = t.gradient(ref, xt, output_gradients=tf.constant(cot_native))
    np.testing.assert_allclose(a, ref_a, atol=1e-5)
    np.testing.assert_allclose(gx, ref_g.numpy(), atol=1e-5)


@pytest.mark.parametrize("rule", ["vanilla", "guided", "deconv"])
@pytest.mark.parametrize("layer", [None, "c2", "c4"])
def test_rules_match_torch_twin(adapters, x, rule, layer):
    ka, ta = adapters
    a_k, g_k = ka.vjp(x, layer, cos_like, rule)
    a_t, g_t = ta.vjp(nchw(x), layer, cos_like, rule)
    np.testing.assert_allclose(a_k, a_t, atol=1e-5)
    np.testing.assert_allclose(nchw(g_k), g_t, atol=1e-5)
    assert np.abs(g_k).max() > 0


def test_rules_differ_and_follow_their_definitions(adapters, x):
    """Hand-written backward of the last stages: out = W2 relu(W1 p + b1) + b2, p = GAP."""
    ka, _ = adapters
    cot = lambda a: np.array([[1.0, -2.0, 0.5]] * a.shape[0], np.float32)  # noqa: E731
    grads = {r: ka.vjp(x, None, cot, r)[1] for r in ("vanilla", "guided", "deconv")}
    assert not np.allclose(grads["vanilla"], grads["guided"]) and not np.allclose(grads["guided"], grads["deconv"])
    # the gradient reaching the GAP output p under each rule, by hand
    d1, out = ka.model.get_layer("d1"), ka.model.get_layer("out")
    (p,) = ka.activations(x, ["gap"])
    w1, b1 = [v.numpy() for v in d1.weights]
    w2 = out.weights[0].numpy()
    z = p @ w1 + b1
    g_h = cot(z) @ w2.T                        # gradient at relu(z)
    at_z = {"vanilla": g_h * (z > 0), "guided": np.maximum(g_h, 0) * (z > 0), "deconv": np.maximum(g_h, 0)}
    hand = {r: g @ w1.T for r, g in at_z.items()}  # gradient reaching p
    for rule, expect in hand.items():
        # d<p, expect>/dx under the same rule equals the full vjp (chain rule through the GAP layer)
        _, via_gap = ka.vjp(x, "gap", lambda a, e=expect: e.astype(np.float32), rule)
        np.testing.assert_allclose(via_gap, grads[rule], atol=1e-5)


def test_input_gradients_and_callable_target(adapters, tiny, x):
    import tensorflow as tf

    ka = adapters[0]
    g = ka.input_gradients(x, TargetSpec([2, 0], 2))
    fn = lambda out: out[:, 1] - 2 * out[:, 2]  # noqa: E731
    h = ka.input_gradients(x, TargetSpec(fn, 2))
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as t:
        t.watch(xt)
        out = tiny(xt)
        s1 = tf.gather(out, [2, 0], axis=1, batch_dims=1)
        s2 = fn(out)
    np.testing.assert_allclose(g.input_grads, t.gradient(s1, xt).numpy(), atol=1e-5)
    np.testing.assert_allclose(h.input_grads, t.gradient(s2, xt).numpy(), atol=1e-5)
    np.testing.assert_allclose(h.scores, s2.numpy(), atol=1e-5)
    np.testing.assert_array_equal(g.classes, [2, 0])
    assert h.classes is None


def test_activations_layer_names_conv_weights(adapters, tiny, x):
    import keras

    ka, ta = adapters
    acts = ka.activations(x, ["c1", tiny.get_layer("gap")])
    ref = keras.Model(tiny.inputs[0], [tiny.get_layer("c1").output, tiny.get_layer("gap").output])(x)
    np.testing.assert_allclose(acts[0], nchw(ref[0].numpy()), atol=1e-6)
    np.testing.assert_allclose(acts[1], ref[1].numpy(), atol=1e-6)
    names = ka.layer_names()
    assert {"c1", "c2", "r2", "c3", "a3", "c4", "gap", "d1", "out"} <= set(names)
    np.testing.assert_array_equal(ka.conv_weights("c3"), ta.conv_weights("c3"))
    with pytest.raises(ValueError, match="not a Conv2D"):
        ka.conv_weights("d1")
    with pytest.raises(ValueError, match="closest names"):
        ka.vjp(x, "c33", lambda a: a)


def test_model_unchanged_also_after_errors(tiny, x):
    from agnostic_cam.adapters.keras.adapter import KerasAdapter

    w0, meta0 = state(tiny)
    ka = KerasAdapter(tiny, "a3")
    for rule in ("guided", "deconv"):
        ka.vjp(x, "c2", lambda a: np.ones_like(a), rule)
    with pytest.raises(ValueError, match="unknown backward rule"):
        ka.vjp(x, None, lambda a: a, "smooth")
    with pytest.raises(ValueError, match="shape"):
        ka.vjp(x, "c2", lambda a: np.ones((1, 2), np.float32), "guided")
    with pytest.raises(RuntimeError):
        ka.vjp(x, "c1", lambda a: (_ for _ in ()).throw(RuntimeError("user cotangent fails")), "deconv")
    w1, meta1 = state(tiny)
    assert meta0 == meta1
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    # and the plain model still has its true gradient (no rule leaked into the model)
    van = ka.vjp(x, None, lambda a: np.ones_like(a))[1]
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as t:
        t.watch(xt)
        y = tf.reduce_sum(tiny(xt))
    np.testing.assert_allclose(van, t.gradient(y, xt).numpy(), atol=1e-5)


def test_rules_need_a_relu():
    import keras
    from keras import layers

    from agnostic_cam.adapters.keras.adapter import KerasAdapter

    inp = keras.Input((S, S, 3))
    x = layers.Conv2D(4, 3, activation="swish", name="c")(inp)
    ka = KerasAdapter(keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x))), "c")
    xs = np.ones((1, S, S, 3), np.float32)
    with pytest.raises(ValueError, match="has no ReLU.*'vanilla'"):
        ka.vjp(xs, None, lambda a: np.ones_like(a), "guided")
    assert np.abs(ka.vjp(xs, None, lambda a: np.ones_like(a))[1]).max() > 0


def test_keras_backward_rule_policy_counts_activations():
    """Issue 18 policy on Keras: ReLU-family = ReLU layers without slope/threshold (any max_value),
    relu/relu6 activations; a swish or leaky ReLU makes the model partly ReLU (refused by default)."""
    import keras
    from keras import layers

    from agnostic_cam import Explainer
    from agnostic_cam.errors import ModelError

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    h = layers.ReLU(max_value=6.0, name="r6")(layers.Conv2D(4, 3, padding="same", name="c2")(h))
    h = layers.Activation("swish", name="sw")(layers.Conv2D(4, 3, padding="same", name="c3")(h))
    h = layers.ReLU(negative_slope=0.1, name="leaky")(h)
    out = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    ex = Explainer.from_keras(model, "c3")
    census = ex.adapter.activation_census()
    assert (len(census.relus), len(census.others)) == (2, 2), census.summary()
    assert "guided_backprop" not in ex.methods and "saliency" in ex.methods
    x = np.random.default_rng(0).standard_normal((1, 12, 12, 3)).astype(np.float32)
    with pytest.raises(ModelError, match="only 2 of 4 activations are ReLUs"):
        ex.explain(x, "guided_backprop")
    g = ex.explain(x, "guided_backprop", partial_rules=True)
    assert np.isfinite(g.raw).all() and np.abs(g.raw).max() > 0


def test_keras_hint_for_a_1x1_layer_names_layers_larger_than_1x1():
    """Issue 18: the error for a 1x1 target layer suggests layers whose map is larger than 1x1."""
    import keras
    from keras import layers

    from agnostic_cam import Explainer
    from agnostic_cam.errors import ModelError

    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(4, 3, padding="same", name="big1")(inp)
    h = layers.Conv2D(4, 3, padding="same", name="big2")(h)
    h = layers.MaxPooling2D(8, name="pool")(h)
    for i in range(4):
        h = layers.Conv2D(4, 1, name=f"one{i}")(h)
    model = keras.Model(inp, layers.Dense(2)(layers.Flatten()(h)))
    with pytest.raises(ModelError, match="1x1 map") as err:
        Explainer.from_keras(model, "one3")
    hint = str(err.value).split("e.g.")[1]
    assert "'big2'" in hint and "'big1'" in hint and "one" not in hint and "pool" not in hint


def test_keras_export_fallback_runs_forward_methods(capfd):
    """Issue 18 on Keras: tf2onnx leaves an op ONNX Runtime cannot load (Lgamma in a Lambda); forward
    methods run as Keras forward passes with one warning, nothing printed, and equal eager references
    (activations from a keras sub-model, Ablation-CAM's tail GAP + Dense by hand in float64)."""
    import warnings

    import keras
    import tensorflow as tf
    from keras import layers

    from agnostic_cam import Explainer
    from agnostic_cam.engine.eager import EagerEngine, ExportFallbackWarning
    from agnostic_cam.core.imaging import cam_to_heatmap

    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    h = layers.Lambda(lambda t: tf.math.lgamma(tf.nn.softplus(t) + 1.0), name="odd")(h)
    feat = layers.Conv2D(6, 3, padding="same", name="c2")(h)
    dense = layers.Dense(3)
    model = keras.Model(inp, dense(layers.GlobalAveragePooling2D()(feat)))
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = Explainer.from_keras(model, "c2")
        got = {m: ex.explain(x, m, target=[0, 2]) for m in ("eigencam", "scorecam", "ablationcam")}
    fb = [w for w in caught if issubclass(w.category, ExportFallbackWarning)]
    assert len(fb) == 1 and "Keras forward passes" in str(fb[0].message) and "Lgamma" in str(fb[0].message)
    assert isinstance(ex.adapter.engine((16, 16, 3)), EagerEngine)
    assert capfd.readouterr().out == ""

    a = keras.Model(inp, feat)(x).numpy().transpose(0, 3, 1, 2).astype(np.float64)  # (N, C, h, w)
    from independent import eigen_diff_up_to_sign

    assert eigen_diff_up_to_sign(a, got["eigencam"].heatmap) <= 1e-5
    w, b = (v.astype(np.float64) for v in dense.get_weights())
    t = np.array([0, 2])
    y = (a.mean(axis=(2, 3)) @ w + b)[np.arange(2), t]
    wa = np.zeros((2, a.shape[1]))
    for c in range(a.shape[1]):
        z = a.copy()
        z[:, c] = 0
        wa[:, c] = (y - (z.mean(axis=(2, 3)) @ w + b)[np.arange(2), t]) / y
    ref = cam_to_heatmap(np.einsum("nc,nchw->nhw", wa, a), (16, 16))
    np.testing.assert_allclose(got["ablationcam"].heatmap, ref, atol=1e-5)
    up = torch.nn.functional.interpolate(torch.from_numpy(a), size=(16, 16), mode="bilinear", align_corners=True)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    masks = ((up - lo) / (hi - lo + 1e-8)).numpy().astype(np.float32)
    ws = np.stack([torch.softmax(torch.from_numpy(model(x[i][None] * masks[i][..., None]).numpy()[:, t[i]]
                                                  .astype(np.float64)), 0).numpy() for i in range(2)])
    np.testing.assert_allclose(got["scorecam"].heatmap, cam_to_heatmap(np.einsum("nc,nchw->nhw", ws, a), (16, 16)),
                               atol=1e-5)


def test_freeze_gives_tf2onnx_from_function_graph(tiny):
    """adapters/keras/export.freeze (no ConcreteFunction rebuilt from the frozen graph) returns the graph
    tf2onnx's own ``tf_loader.from_function`` returns: the same nodes (name, op, inputs) and, run by
    TensorFlow, the same output bits."""
    import tensorflow as tf
    from tf2onnx import tf_loader

    from agnostic_cam.adapters.keras.export import freeze

    spec = [tf.TensorSpec((None, S, S, 3), tf.float32)]
    fn = tf.function(lambda t: tiny(t), input_signature=spec, autograph=False).get_concrete_function()
    ins, outs = [fn.inputs[0].name], [t.name for t in fn.outputs]
    got, ref = freeze(fn, ins, outs), tf_loader.from_function(fn, ins, outs)
    def nodes(graph_def):
        return sorted((n.name, n.op, tuple(n.input)) for n in graph_def.node)

    assert nodes(got) == nodes(ref) and len(got.node) > 10
    assert not any(n.op in ("VarHandleOp", "ReadVariableOp") for n in got.node)  # frozen: weights are constants
    x = np.random.default_rng(5).normal(size=(2, S, S, 3)).astype(np.float32)
    runs = []
    for gd in (got, ref):
        with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
            tf.import_graph_def(gd, name="")
            runs.append(sess.run(outs, {ins[0]: x}))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_allclose(runs[0][0], tiny(x).numpy(), atol=1e-5)


def test_top1_targets_in_the_graph_and_on_ties(tiny, x):
    """target=None: the class picked inside the compiled pass is NumPy's argmax of the outputs, also
    when every output ties (NumPy takes the first; wherever TensorFlow's pick differs, the pass is
    redone with NumPy's); gradients and scores equal a tape's, out-of-range classes are refused."""
    import keras
    import tensorflow as tf

    from agnostic_cam.adapters.keras.adapter import KerasAdapter
    from agnostic_cam.errors import InputError

    inp = keras.Input((S, S, 3))
    feat = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    head = keras.layers.Dense(3, name="head")
    flat = keras.Model(inp, head(keras.layers.GlobalAveragePooling2D()(feat)))
    for model, ties in ((tiny, False), (flat, True)):
        if ties:  # every image's outputs are equal: the bias alone
            head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
            head.bias.assign(np.full(3, 0.5, np.float32))
        ka = KerasAdapter(model, "conv" if ties else "c2")
        xt = tf.constant(x)
        with tf.GradientTape(persistent=True) as t:
            t.watch(xt)
            out = model(xt)
        top = out.numpy().argmax(axis=1)
        if ties:
            assert (top == 0).all()
        g = ka.input_gradients(x, TargetSpec(None, len(x)))
        lg = ka.layer_gradients(x, TargetSpec(None, len(x)))
        np.testing.assert_array_equal(g.classes, top)
        np.testing.assert_array_equal(lg.classes, top)
        with t:
            s = tf.gather(out, top, axis=1, batch_dims=1)
        np.testing.assert_allclose(g.input_grads, t.gradient(s, xt).numpy(), atol=1e-5)
        np.testing.assert_allclose(g.scores, s.numpy(), atol=1e-6)
        with pytest.raises(InputError, match="out of range"):
            ka.layer_gradients(x, TargetSpec(3, len(x)))
