"""from_onnx gives the same maps as from_torch on the same network (PyTorch NCHW and Keras NHWC exports)."""
import numpy as np
import pytest
from onnx_helpers import export_torch, keras_to_onnx, keras_twin, torch_net

from agnostic_cam import Explainer

FORWARD = ["scorecam", "ablationcam", "eigencam", "cam"]
GRADIENT = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]
SIZE = 24


@pytest.fixture(scope="module")
def net(torch):
    return torch_net()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(net):
    return Explainer.from_torch(net, "feat", progress=False)


def _same(a, b, method):
    assert a.heatmap.shape == b.heatmap.shape
    if method == "eigencam":  # sign of a singular vector is arbitrary; both fix it the same way
        np.testing.assert_allclose(np.abs(a.raw), np.abs(b.raw), atol=1e-4)
    else:
        np.testing.assert_allclose(a.raw, b.raw, atol=1e-4 * max(1.0, np.abs(b.raw).max()))
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-4)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "fixed-batch"])
@pytest.mark.parametrize("method", FORWARD + GRADIENT)
def test_torch_export_matches_from_torch(net, images, reference, dynamic, method):
    proto = export_torch(net, SIZE, dynamic=dynamic, batch=1 if dynamic else 2)
    ex = Explainer.from_onnx(proto, progress=False)
    assert ex.adapter.layout == "NCHW"
    assert ex.adapter.layer.op_type == "Relu" and ex.adapter.layer.shape[1:] == (12, SIZE // 2, SIZE // 2)
    ours = ex.explain(images, method, target=[0, 3, 4])          # 3 images through a batch fixed to 2
    _same(ours, reference.explain(images, method, target=[0, 3, 4]), method)


def test_fixed_batch_top1_and_callable(net, images, reference):
    ex = Explainer.from_onnx(export_torch(net, SIZE, dynamic=False, batch=2), progress=False)
    assert ex.adapter.input_shape[0] == 2
    for method in ("gradcam", "scorecam"):
        a, b = ex.explain(images, method), reference.explain(images, method)
        np.testing.assert_array_equal(a.targets, b.targets)
        _same(a, b, method)
    diff = ex.explain(images, "gradcam", target=lambda out: out[:, 1] - out[:, 2])
    ref = reference.explain(images, "gradcam", target=lambda out: out[:, 1] - out[:, 2])
    _same(diff, ref, "gradcam")


@pytest.fixture(scope="module")
def keras_model(net):
    return keras_twin(net, SIZE)


@pytest.fixture(scope="module")
def keras_onnx(keras_model):
    return keras_to_onnx(keras_model, SIZE)


@pytest.mark.parametrize("method", FORWARD + ["gradcam", "layercam"])
def test_keras_tf2onnx_nhwc_matches_from_torch(keras_onnx, images, reference, method):
    ex = Explainer.from_onnx(keras_onnx, progress=False)
    assert ex.adapter.layout == "NHWC"
    x_nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    ours = ex.explain(x_nhwc, method, target=[1, 2, 0])
    _same(ours, reference.explain(images, method, target=[1, 2, 0]), method)


@pytest.mark.parametrize("method", FORWARD + GRADIENT + ["saliency", "guided_backprop"])
def test_keras_tf2onnx_matches_from_keras(keras_model, keras_onnx, images, method):
    """The tf2onnx file explained bare equals the Keras model explained through from_keras."""
    x_nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    ours = Explainer.from_onnx(keras_onnx, progress=False).explain(x_nhwc, method, target=[2, 0, 4])
    ref = Explainer.from_keras(keras_model, "feat", progress=False).explain(x_nhwc, method, target=[2, 0, 4])
    _same(ours, ref, method)


def test_keras_layout_errors_point_to_transpose(keras_onnx, images):
    ex = Explainer.from_onnx(keras_onnx, progress=False)
    with pytest.raises(ValueError, match="transpose"):
        ex.explain(images, "scorecam")


def test_input_gradients_match_torch_autograd(torch, net, images):
    """Saliency-style input gradients through the onnx2torch backend, vanilla and guided."""
    from agnostic_cam.targets import TargetSpec

    ex = Explainer.from_onnx(export_torch(net, SIZE), progress=False)
    g = ex.adapter.input_gradients(images, TargetSpec([0, 1, 2], 3))
    xt = torch.from_numpy(images).requires_grad_(True)
    out = net(xt)
    out[[0, 1, 2], [0, 1, 2]].sum().backward()
    np.testing.assert_allclose(g.input_grads, xt.grad.numpy(), atol=1e-5)

    guided = ex.adapter.input_gradients(images, TargetSpec([0, 1, 2], 3), rule="guided").input_grads

    class GuidedReLU(torch.autograd.Function):  # reference rule: Springenberg et al. 2015
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a.clamp(min=0)

        @staticmethod
        def backward(ctx, grad):
            (a,) = ctx.saved_tensors
            return grad * (a > 0) * (grad > 0)

    xt = torch.from_numpy(images).requires_grad_(True)
    h = GuidedReLU.apply(net.bn(net.conv2(GuidedReLU.apply(net.conv1(xt)))))
    net.fc(h.mean(dim=(2, 3)))[[0, 1, 2], [0, 1, 2]].sum().backward()
    np.testing.assert_allclose(guided, xt.grad.numpy(), atol=1e-5)
    assert not np.allclose(guided, g.input_grads)  # the rule changes the result


def test_keras_softmax_head_explained_as_logits(net, images, reference):
    proto = keras_to_onnx(keras_twin(net, SIZE, softmax=True), SIZE)
    assert any(n.op_type == "Softmax" for n in proto.graph.node)
    ex = Explainer.from_onnx(proto, output="logits", progress=False)
    x_nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    for method in ("cam", "gradcam"):
        _same(ex.explain(x_nhwc, method, target=[4, 0, 2]), reference.explain(images, method, target=[4, 0, 2]), method)
