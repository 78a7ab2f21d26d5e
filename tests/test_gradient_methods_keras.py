"""The pixel-space methods on the Keras twin of the demo model (same weights, NHWC) match the
PyTorch demo model: raw attributions (both channel-first) and heatmaps to <= 1e-3."""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (importing torchvision after TF segfaults here)

from agnostic_cam import Explainer

RTOL = 1e-3
CASES = [("saliency", {}), ("guided_backprop", {}), ("deconvnet", {}), ("gradient_x_input", {}),
         ("integrated_gradients", {"steps": 12}), ("smoothgrad", {"base": "guided_backprop", "samples": 4}),
         ("guided_gradcam", {}), ("guided_gradcam++", {}), ("guided_layercam", {}), ("guided_scorecam", {})]


@pytest.fixture(scope="module")
def twins(demo_model):
    from agnostic_cam.demo.keras_model import TARGET_LAYER as K_LAYER
    from agnostic_cam.demo.keras_model import keras_twin
    from agnostic_cam.demo.run import demo_images
    from agnostic_cam.demo.torch_model import TARGET_LAYER

    x, _ = demo_images(3)
    t = Explainer.from_torch(demo_model, TARGET_LAYER, progress=False)
    k = Explainer.from_keras(keras_twin(demo_model), K_LAYER, progress=False)
    return t, k, x


def near_tie_bound(model, x, steps):
    """Per pixel, what the near-ties of the demo model's ReLUs and max-pools along the IG path can
    change (tests/float_bounds.py, float64; zero at the pixels no near-tie reaches). The synthetic
    shapes have flat regions, so max-pool windows of equal values are common: each framework's
    float32 convolution breaks such a tie by its own summation order (3 of 12,288 pixels differed
    by 1.3e-3 of the max on an AVX2 CPU)."""
    from float_bounds import ig_bounds

    f = model.features
    stages = [("conv", f.conv1), ("bn", f.bn1), ("relu", None), ("maxpool", None),
              ("conv", f.conv2), ("bn", f.bn2), ("relu", None), ("maxpool", None),
              ("conv", f.conv3), ("bn", f.bn3), ("relu", None), ("gap", None), ("fc", model.fc)]
    nodes, w = np.polynomial.legendre.leggauss(steps)
    return ig_bounds(stages, x, [0, 1, 2], (nodes + 1) / 2, w / 2)[2]


@pytest.mark.parametrize("name, opts", CASES, ids=[c[0] for c in CASES])
def test_keras_twin_matches_torch(twins, demo_model, name, opts):
    """RTOL: both sides are float32 forward + backward through 3 conv layers (n ~ 900 terms per
    path, lambda sqrt(n) u ~ 1e-5 of the path sums each), then a max normalisation whose condition
    is 1 / (the largest attribution): 1e-3 of the max leaves room for the pixels where the
    gradients cancel. IG adds, per pixel, the measured near-tie allowance (near_tie_bound)."""
    t, k, x = twins
    a = t.explain(x, name, target=[0, 1, 2], **opts)
    b = k.explain(x.transpose(0, 2, 3, 1), name, target=[0, 1, 2], **opts)
    assert b.raw.shape == a.raw.shape == x.shape  # channel-first for both layouts
    ties = near_tie_bound(demo_model, x, opts["steps"]) if name == "integrated_gradients" else 0.0
    scale = np.abs(a.raw).max()
    bad = np.abs(a.raw - b.raw) > RTOL * scale + ties
    assert not bad.any(), f"{name}: {bad.sum()} pixels, relative error {np.abs(a.raw - b.raw).max() / scale:.2e}"
    heat_tol = RTOL + 2 * np.max(ties, axis=1) / scale if name == "integrated_gradients" else RTOL
    assert (np.abs(b.heatmap - a.heatmap) <= heat_tol).all()
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-4, atol=1e-4)


def test_fused_relus_follow_the_rule(torch):
    """Conv2D(activation="relu") and Dense(activation="relu") in Keras vs F.relu in a PyTorch twin:
    guided backprop and deconvnet agree, and differ from the vanilla gradient."""
    import keras
    from keras import layers
    from torch import nn

    keras.utils.set_random_seed(4)
    inp = keras.Input((12, 12, 3))
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(6, activation="relu", name="d1")(h)
    km = keras.Model(inp, layers.Dense(3, name="out")(h))
    for ly in km.layers:  # biases away from zero so that the ReLUs cut
        if getattr(ly, "bias", None) is not None:
            ly.bias.assign(np.random.default_rng(len(ly.name)).normal(0, 0.3, ly.bias.shape).astype(np.float32))

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1)
            self.d1, self.out = nn.Linear(8, 6), nn.Linear(6, 3)

        def forward(self, x):
            x = nn.functional.relu(self.c2(nn.functional.relu(self.c1(x))))
            return self.out(nn.functional.relu(self.d1(x.mean((2, 3)))))

    tm = Twin().eval()
    with torch.no_grad():
        for name in ("c1", "c2"):
            w, b = km.get_layer(name).get_weights()
            getattr(tm, name).weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1)))
            getattr(tm, name).bias.copy_(torch.from_numpy(b))
        for name in ("d1", "out"):
            w, b = km.get_layer(name).get_weights()
            getattr(tm, name).weight.copy_(torch.from_numpy(w.T))
            getattr(tm, name).bias.copy_(torch.from_numpy(b))
    x = np.random.default_rng(9).normal(size=(2, 3, 12, 12)).astype(np.float32)
    te = Explainer.from_torch(tm, "c2", progress=False)
    ke = Explainer.from_keras(km, "c2", progress=False)
    raws = {}
    for name in ("saliency", "guided_backprop", "deconvnet"):
        a = te.explain(x, name, target=[0, 2]).raw
        b = ke.explain(x.transpose(0, 2, 3, 1), name, target=[0, 2]).raw
        assert np.abs(a - b).max() <= RTOL * np.abs(a).max(), name
        raws[name] = a
    for name in ("guided_backprop", "deconvnet"):
        assert np.abs(raws[name] - raws["saliency"]).max() > 0.05 * np.abs(raws["saliency"]).max(), name


@pytest.fixture(scope="module")
def higher_twins():
    """A Keras model whose FullGrad needs pre-activation taps (fused tanh / sigmoid / ELU), a batch
    norm's effective bias and a depthwise convolution, and whose ShapleyCAM has a non-zero Hessian
    term (smooth layers after the target layer 'c2'), with a PyTorch twin carrying its weights."""
    import keras
    import torch
    from keras import layers
    from torch import nn

    keras.utils.set_random_seed(5)
    inp = keras.Input((16, 16, 3))
    h = layers.Conv2D(6, 3, padding="same", name="c1")(inp)
    h = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5, name="bn1")(h))
    h = layers.Conv2D(8, 3, padding="same", activation="tanh", name="c2")(h)
    h = layers.DepthwiseConv2D(3, padding="same", activation="sigmoid", name="dw")(h)
    h = layers.Conv2D(6, 1, activation="elu", name="c3")(h)
    km = keras.Model(inp, layers.Dense(3, name="out")(layers.GlobalAveragePooling2D()(h)))
    rng = np.random.default_rng(3)
    bn = km.get_layer("bn1")
    for v, lo in ((bn.gamma, 0.5), (bn.beta, -0.5), (bn.moving_mean, -0.3), (bn.moving_variance, 0.5)):
        v.assign(rng.uniform(lo, lo + 1.0, v.shape).astype(np.float32))
    for name in ("c1", "c2", "dw", "c3", "out"):
        b = km.get_layer(name).bias
        b.assign(rng.normal(0, 0.3, b.shape).astype(np.float32))

    tm = nn.Sequential()
    for name, mod in (("c1", nn.Conv2d(3, 6, 3, padding=1)), ("bn1", nn.BatchNorm2d(6)), ("r1", nn.ReLU()),
                      ("c2", nn.Conv2d(6, 8, 3, padding=1)), ("t2", nn.Tanh()),
                      ("dw", nn.Conv2d(8, 8, 3, padding=1, groups=8)), ("s", nn.Sigmoid()),
                      ("c3", nn.Conv2d(8, 6, 1)), ("e", nn.ELU()), ("pool", nn.AdaptiveAvgPool2d(1)),
                      ("flat", nn.Flatten()), ("out", nn.Linear(6, 3))):
        tm.add_module(name, mod)
    with torch.no_grad():
        for name, perm in (("c1", (3, 2, 0, 1)), ("c2", (3, 2, 0, 1)), ("dw", (2, 3, 0, 1)), ("c3", (3, 2, 0, 1))):
            w, b = km.get_layer(name).get_weights()
            getattr(tm, name).weight.copy_(torch.from_numpy(w.transpose(*perm)))
            getattr(tm, name).bias.copy_(torch.from_numpy(b))
        w, b = km.get_layer("out").get_weights()
        tm.out.weight.copy_(torch.from_numpy(w.T))
        tm.out.bias.copy_(torch.from_numpy(b))
        for t, k in zip((tm.bn1.weight, tm.bn1.bias, tm.bn1.running_mean, tm.bn1.running_var), bn.get_weights()):
            t.copy_(torch.from_numpy(k))
    x = np.random.default_rng(9).normal(size=(2, 3, 16, 16)).astype(np.float32)
    return (Explainer.from_torch(tm.eval(), "t2", progress=False), Explainer.from_keras(km, "c2", progress=False), x)


def test_fullgrad_bias_terms_match_torch(higher_twins):
    """Every bias layer's bias (batch norm: beta - mean * gamma / sqrt(var + eps)) and the gradient
    at its output before the fused activation equal PyTorch's; so does the FullGrad map."""
    from agnostic_cam.methods import get_method
    from agnostic_cam.targets import TargetSpec

    te, ke, x = higher_twins
    xk = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    needs = get_method("fullgrad").needs
    ct, ck = te.capture(x, TargetSpec([0, 2], 2), needs), ke.capture(xk, TargetSpec([0, 2], 2), needs)
    assert len(ck.bias_terms) == len(ct.bias_terms) == 5  # c1, bn1, c2, dw, c3 (the Dense head is no bias layer)
    for (bt, gt), (bk, gk) in zip(ct.bias_terms, ck.bias_terms):
        np.testing.assert_allclose(bk, bt, atol=1e-5)
        assert gk.shape == gt.shape and np.abs(gt).max() > 0
        assert np.abs(gk - gt).max() <= 1e-4 * np.abs(gt).max()
    np.testing.assert_allclose(ck.input_grads.transpose(0, 3, 1, 2), ct.input_grads, atol=1e-5)
    a, b = te.explain(x, "fullgrad", target=[0, 2]), ke.explain(xk, "fullgrad", target=[0, 2])
    assert np.abs(a.heatmap - b.heatmap).max() <= 1e-4


def test_shapleycam_hessian_term_matches_torch(higher_twins):
    """The Hessian-vector product at 'c2' (nested tapes) equals PyTorch's double backward, for class
    targets and for a callable target whose own second derivative counts (softmax probability)."""
    import tensorflow as tf
    import torch

    from agnostic_cam.methods import get_method
    from agnostic_cam.targets import TargetSpec

    te, ke, x = higher_twins
    xk = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    needs = get_method("shapleycam").needs
    for t_target, k_target in (([1, 2], [1, 2]), (lambda o: torch.softmax(o, 1)[:, 0], lambda o: tf.nn.softmax(o)[:, 0])):
        ct, ck = te.capture(x, TargetSpec(t_target, 2), needs), ke.capture(xk, TargetSpec(k_target, 2), needs)
        assert ck.hvp.shape == ct.hvp.shape == (2, 8, 16, 16)
        assert np.abs(ct.hvp).max() > 1e-3 * np.abs(ct.grads).max()  # the Hessian term is there
        assert np.abs(ck.hvp - ct.hvp).max() <= 1e-4 * np.abs(ct.hvp).max()
        np.testing.assert_allclose(ck.grads, ct.grads, atol=1e-4 * np.abs(ct.grads).max())
        a, b = te.explain(x, "shapleycam", target=t_target), ke.explain(xk, "shapleycam", target=k_target)
        assert np.abs(a.heatmap - b.heatmap).max() <= 1e-4
        assert np.abs(a.heatmap - te.explain(x, "gradcam", target=t_target).heatmap).max() > 1e-3


def test_fullgrad_left_out_where_bias_layers_are_hidden():
    """A convolution inside a custom layer's own code cannot be read: ``ex.methods`` leaves FullGrad
    out (ShapleyCAM stays) and asking for it names the layer and the fix."""
    import keras
    from keras import layers

    from agnostic_cam.errors import ModelError

    class Block(layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.conv = layers.Conv2D(4, 3, padding="same")

        def call(self, x):
            return keras.ops.relu(self.conv(x))

    inp = keras.Input((12, 12, 3))
    h = layers.Conv2D(4, 3, padding="same", name="c1")(Block(name="block")(inp))
    ex = Explainer.from_keras(keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(h))), "c1",
                              progress=False)
    assert "shapleycam" in ex.methods and "fullgrad" not in ex.methods
    with pytest.raises(ModelError, match=r"'block'.*inside its own code.*functional API"):
        ex.explain(np.zeros((1, 12, 12, 3), np.float32), "fullgrad")


def test_fullgrad_counts_every_call_of_a_shared_layer():
    """A convolution applied twice gives two bias terms (one per call) in PyTorch and in Keras,
    and the two FullGrad maps agree."""
    import keras
    import torch
    from keras import layers
    from torch import nn

    from agnostic_cam.methods import get_method
    from agnostic_cam.targets import TargetSpec

    keras.utils.set_random_seed(6)
    shared = layers.Conv2D(4, 3, padding="same", name="shared")
    inp = keras.Input((10, 10, 4))
    h = layers.ReLU()(shared(layers.ReLU()(shared(inp))))
    km = keras.Model(inp, layers.Dense(2, name="out")(layers.GlobalAveragePooling2D()(h)))
    shared.bias.assign(np.random.default_rng(1).normal(0, 0.3, 4).astype(np.float32))

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared, self.out = nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.relu(self.shared(torch.relu(self.shared(x)))).mean((2, 3)))

    tm = Twin().eval()
    with torch.no_grad():
        w, b = shared.get_weights()
        tm.shared.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1)))
        tm.shared.bias.copy_(torch.from_numpy(b))
        w, b = km.get_layer("out").get_weights()
        tm.out.weight.copy_(torch.from_numpy(w.T))
        tm.out.bias.copy_(torch.from_numpy(b))
    x = np.random.default_rng(2).normal(size=(2, 4, 10, 10)).astype(np.float32)
    xk = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    te, ke = Explainer.from_torch(tm, "shared", progress=False), Explainer.from_keras(km, progress=False)
    needs = get_method("fullgrad").needs
    ct, ck = te.capture(x, TargetSpec([0, 1], 2), needs), ke.capture(xk, TargetSpec([0, 1], 2), needs)
    assert len(ct.bias_terms) == len(ck.bias_terms) == 2
    for (_, gt), (_, gk) in zip(ct.bias_terms, ck.bias_terms):
        assert np.abs(gk - gt).max() <= 1e-4 * np.abs(gt).max()
    a, b = te.explain(x, "fullgrad", target=[0, 1]), ke.explain(xk, "fullgrad", target=[0, 1])
    assert np.abs(a.heatmap - b.heatmap).max() <= 1e-4
