"""Pixel-space methods: SmoothGrad and IG against references, options and errors, renderings,
the NHWC path, and the user's model left unchanged (also after errors)."""
import numpy as np
import pytest

from agnostic_cam import Explainer
from test_model_state import assert_same, make_model, snapshot

PIXEL = ["saliency", "guided_backprop", "deconvnet", "gradient_x_input", "integrated_gradients", "smoothgrad",
         "guided_gradcam", "guided_gradcam++", "guided_scorecam", "guided_layercam"]


@pytest.fixture(scope="module")
def ex(small_cnn):
    return Explainer.from_torch(small_cnn, "act3", progress=False)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(5).normal(size=(2, 3, 16, 14)).astype(np.float32)


def autograd_grads(torch, model, rows, classes, guided=False):
    """Reference input gradients: torch autograd directly, or Captum's GuidedBackprop (module-ReLU twin)."""
    if guided:
        import captum.attr as ca

        return ca.GuidedBackprop(model).attribute(torch.from_numpy(rows), target=[int(c) for c in classes]).detach().numpy()
    xt = torch.from_numpy(rows).requires_grad_(True)
    out = model(xt)
    (g,) = torch.autograd.grad(out[np.arange(len(rows)), list(classes)].sum(), xt)
    return g.numpy()


@pytest.mark.parametrize("base", ["saliency", "guided_backprop"])
def test_smoothgrad_matches_reference(torch, small_cnn, ex, x, base):
    """Mean of the base method's gradients on x + N(0, (noise * range)^2) with the same noise stream."""
    samples, noise = 5, 0.2
    got = ex.explain(x, "smoothgrad", target=[1, 3], base=base, noise=noise, samples=samples, seed=7, batch_size=3)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    eps = np.random.default_rng(7).standard_normal((2 * samples, *x.shape[1:]))
    img = np.repeat(np.arange(2), samples)
    rows = (x[img] + eps * sigma[img, None, None, None]).astype(np.float32)
    model = small_cnn
    if base == "guided_backprop":  # Captum needs module ReLUs: the twin of the Captum tests
        from torch import nn

        class Twin(nn.Module):  # Captum hooks ReLU modules only: F.relu becomes a module
            def __init__(self):
                super().__init__()
                self.m, self.act2 = small_cnn, nn.ReLU()

            def forward(self, t):
                m = self.m
                t = m.act1(m.conv1(t))
                t = self.act2(m.bn2(m.conv2(t)))
                return m.fc(m.pool(m.act3(m.conv3(t))).flatten(1))

        model = Twin().eval()
    g = autograd_grads(torch, model, rows, np.array([1, 3])[img], guided=base == "guided_backprop")
    ref = g.reshape(2, samples, *x.shape[1:]).mean(axis=1)
    np.testing.assert_allclose(got.raw, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    h = np.abs(ref).max(axis=1)
    np.testing.assert_allclose(got.heatmap, h / h.max(axis=(1, 2), keepdims=True), atol=1e-4)
    # the batch size does not change the noise stream
    again = ex.explain(x, "smoothgrad", target=[1, 3], base=base, noise=noise, samples=samples, seed=7, batch_size=64)
    np.testing.assert_allclose(again.raw, got.raw, rtol=1e-5, atol=1e-7)


def test_smoothgrad_without_noise_is_the_base_method(ex, x):
    for base, opts in (("saliency", {}), ("integrated_gradients", {"steps": 8}), ("gradient_x_input", {})):
        sg = ex.explain(x, "smoothgrad", target=[0, 2], base=base, noise=0.0, samples=3, **opts)
        plain = ex.explain(x, base, target=[0, 2], **opts)
        np.testing.assert_allclose(sg.raw, plain.raw, rtol=1e-5, atol=1e-6 * np.abs(plain.raw).max())
    a = ex.explain(x, "smoothgrad", seed=1, samples=4)
    b = ex.explain(x, "smoothgrad", seed=2, samples=4)
    assert not np.allclose(a.raw, b.raw)


def test_integrated_gradients_batching_and_baselines(ex, x):
    a = ex.explain(x, "integrated_gradients", target=[0, 2], steps=10, batch_size=1)
    b = ex.explain(x, "integrated_gradients", target=[0, 2], steps=10, batch_size=64)
    np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-7)
    zero = ex.explain(x, "integrated_gradients", target=[0, 2], steps=10, baseline=0.0)
    np.testing.assert_allclose(zero.raw, a.raw, rtol=1e-5, atol=1e-7)
    per_image = np.stack([np.full(x.shape[1:], 0.5, np.float32), np.zeros(x.shape[1:], np.float32)])
    c = ex.explain(x, "integrated_gradients", target=[0, 2], steps=10, baseline=per_image)
    d = ex.explain(x, "integrated_gradients", target=[0, 2], steps=10, baseline=0.5)
    np.testing.assert_allclose(c.raw[1], a.raw[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c.raw[0], d.raw[0], rtol=1e-5, atol=1e-7)
    # x == baseline: nothing to attribute
    same = ex.explain(x, "integrated_gradients", target=[0, 2], steps=4, baseline=x)
    assert np.abs(same.raw).max() == 0 and np.abs(same.heatmap).max() == 0


def test_options_errors(ex, x):
    with pytest.raises(ValueError, match=r"baseline must be .*\(3, 16, 14\)"):
        ex.explain(x, "integrated_gradients", baseline=np.zeros((16, 14, 3), np.float32))
    with pytest.raises(ValueError, match="steps must be an int >= 2"):
        ex.explain(x, "integrated_gradients", steps=1, quadrature="riemann_trapezoid")
    with pytest.raises(ValueError, match="quadrature must be one of"):
        ex.explain(x, "integrated_gradients", quadrature="simpson")
    with pytest.raises(ValueError, match="base must be a pixel-space gradient method"):
        ex.explain(x, "smoothgrad", base="gradcam")
    with pytest.raises(ValueError, match="unknown method"):
        ex.explain(x, "smoothgrad", base="salency")
    with pytest.raises(ValueError, match="neither smoothgrad .* nor its base 'saliency'"):
        ex.explain(x, "smoothgrad", steps=3)
    with pytest.raises(ValueError, match="noise must be"):
        ex.explain(x, "smoothgrad", noise=-1)
    with pytest.raises(ValueError, match="sign must be one of"):
        ex.explain(x, "saliency", sign="both")
    with pytest.raises(ValueError, match="upsample must be one of"):
        ex.explain(x, "guided_gradcam", upsample="cubic")
    with pytest.raises(ValueError, match="not a pixel-space attribution"):
        ex.explain(x, "gradcam").saliency_image()


def test_saliency_signs(ex, x):
    raw = ex.explain(x, "saliency", target=1).raw
    for sign, m in (("positive", np.maximum(raw, 0)), ("negative", np.maximum(-raw, 0))):
        h = ex.explain(x, "saliency", target=1, sign=sign).heatmap
        m = m.max(axis=1)
        np.testing.assert_allclose(h, m / m.max(axis=(1, 2), keepdims=True), atol=1e-6)


def test_renderings_follow_the_classic_formulas(ex, x):
    e = ex.explain(x, "guided_backprop", target=[1, 3])
    g = e.raw.astype(np.float64)
    img = e.gradient_image()
    assert img.shape == (2, 16, 14, 3) and img.dtype == np.uint8
    for i in range(2):  # per-image min-max of the signed gradient, channels last
        ref = (g[i] - g[i].min()) / (g[i].max() - g[i].min())
        np.testing.assert_allclose(img[i], np.round(ref.transpose(1, 2, 0) * 255), atol=1)
        pos = np.maximum(g[i], 0) / g[i].max()
        np.testing.assert_allclose(e.gradient_image("positive")[i], np.round(pos.transpose(1, 2, 0) * 255), atol=1)
        neg = np.maximum(-g[i], 0) / -g[i].min()
        np.testing.assert_allclose(e.gradient_image("negative")[i], np.round(neg.transpose(1, 2, 0) * 255), atol=1)
        gray = np.abs(g[i]).sum(axis=0)  # sum |g| over channels, clipped at the 99th percentile
        ref = np.clip((gray - gray.min()) / (np.percentile(gray, 99) - gray.min()), 0, 1)
        np.testing.assert_allclose(e.saliency_image()[i], np.round(ref * 255), atol=1)
    assert (e.saliency_image() == 255).mean() >= 0.01  # the top 1% saturates
    assert e.saliency_image("positive").shape == (2, 16, 14)


def test_nhwc_model_gives_channel_first_raw(torch, small_cnn, ex, x):
    """An NHWC ONNX model (gradient backend): raw stays (N, C, H, W) and equals the NCHW result."""
    from torch import nn

    class NHWC(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = small_cnn

        def forward(self, t):
            return self.m(t.permute(0, 3, 1, 2))

    import io
    import warnings

    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(NHWC().eval(), (torch.zeros(1, 16, 14, 3),), buf, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["output"],
                          dynamic_axes={"image": {0: "batch"}, "output": {0: "batch"}})
    onx = Explainer.from_onnx(onnx.load_from_string(buf.getvalue()), layout="NHWC", progress=False)
    xh = x.transpose(0, 2, 3, 1).copy()
    for name, opts in (("saliency", {}), ("guided_backprop", {}), ("integrated_gradients", {"steps": 6}),
                       ("guided_gradcam", {})):
        a = onx.explain(xh, name, target=[1, 3], **opts)
        b = ex.explain(x, name, target=[1, 3], **opts)
        assert a.raw.shape == x.shape
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-4, atol=1e-4 * np.abs(b.raw).max(), err_msg=name)


def _no_mode_left(torch):
    return torch._C._len_torch_function_stack() == 0


def test_model_unchanged_by_every_pixel_method(torch):
    m = make_model(torch)
    before = snapshot(m)
    ex = Explainer.from_torch(m, "layer3", input_shape=(3, 32, 32), progress=False)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    for method in PIXEL:
        opts = {"steps": 4} if method == "integrated_gradients" else {"samples": 3} if method == "smoothgrad" else {}
        ex.explain(x, method, **opts)
        assert_same(before, snapshot(m))
        assert _no_mode_left(torch), method


def test_model_unchanged_after_errors(torch):
    m = make_model(torch)
    before = snapshot(m)
    ex = Explainer.from_torch(m, "layer3", input_shape=(3, 32, 32), progress=False)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    plain = ex.explain(x, "saliency", target=2).raw

    def exploding(out):
        raise RuntimeError("boom inside the target")

    for method in ("guided_backprop", "deconvnet", "smoothgrad", "guided_gradcam", "integrated_gradients"):
        with pytest.raises(RuntimeError, match="boom"):
            ex.explain(x, method, target=exploding)
        assert_same(before, snapshot(m))
        assert _no_mode_left(torch)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        ex.explain(x, "guided_backprop")
    assert_same(before, snapshot(m))
    # ReLUs have their true gradient again: same saliency as before the errors, equal to autograd
    np.testing.assert_array_equal(ex.explain(x, "saliency", target=2).raw, plain)
    m.eval()
    xt = torch.from_numpy(x).requires_grad_(True)
    m(xt)[:, 2].sum().backward()
    np.testing.assert_allclose(plain, xt.grad.numpy(), rtol=1e-4, atol=1e-4 * np.abs(plain).max())


def test_callable_targets_in_several_passes(ex, x):
    """IG and SmoothGrad send new rows through a callable target: same as the class index it picks."""
    for name, opts in (("integrated_gradients", {"steps": 6}), ("smoothgrad", {"samples": 3, "batch_size": 2})):
        a = ex.explain(x, name, target=lambda out: out[:, 2], **opts)
        b = ex.explain(x, name, target=2, **opts)
        assert a.targets is None
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-6 * np.abs(b.raw).max())


def test_figure_shows_the_gradient_image(ex, x):
    e = ex.explain(x, "guided_backprop", target=1)
    fig = e.figure(x)
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(axes) == 6                                      # 2 images x (image, gradient, overlay)
    assert len(bars) == 1 and bars[0].get_xlabel()             # one labelled colour bar under the grid
    np.testing.assert_array_equal(np.asarray(axes[1].images[0].get_array()), e.gradient_image()[0])
    np.testing.assert_array_equal(np.asarray(axes[4].images[0].get_array()), e.gradient_image()[1])


def test_onnx_graph_without_relus_refuses_guided_rules(torch):
    """The ONNX gradient backend shares the torch rules; a graph with no ReLU cannot be 'guided'."""
    from torch import nn

    from onnx_helpers import export_torch

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                        nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    ex = Explainer.from_onnx(export_torch(net, 12), progress=False)
    x = np.random.default_rng(0).normal(size=(2, 3, 12, 12)).astype(np.float32)
    sal = ex.explain(x, "saliency", target=1).raw
    xt = torch.from_numpy(x).requires_grad_(True)
    net(xt)[:, 1].sum().backward()
    np.testing.assert_allclose(sal, xt.grad.numpy(), rtol=1e-4, atol=1e-5 * np.abs(sal).max())
    with pytest.raises(ValueError, match="has none"):
        ex.explain(x, "guided_backprop", target=1)
