"""Explaining never changes the user's model: modes, requires_grad, hooks, weights, also on errors."""
import numpy as np
import pytest

from agnostic_cam import Explainer


def snapshot(model):
    return {
        "modes": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "hooks": [(n, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for n, m in model.named_modules()],
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": [(n, p.grad is None) for n, p in model.named_parameters()],
    }


def assert_same(a, b):
    for k in ("modes", "requires_grad", "hooks", "grads"):
        assert a[k] == b[k], k
    for k, v in a["weights"].items():
        assert (v == b["weights"][k]).all(), k


def make_model(torch):
    import torchvision

    torch.manual_seed(3)
    m = torchvision.models.resnet18(weights=None, num_classes=7)
    m.train()                       # user left it in training mode
    m.layer2.eval()                 # ... with one submodule in eval mode
    for p in m.layer1.parameters():  # ... and part of it frozen
        p.requires_grad_(False)
    return m


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam", "eigencam", "cam", "layercam"])
def test_unchanged_after_success(torch, method):
    m = make_model(torch)
    before = snapshot(m)
    ex = Explainer.from_torch(m, "layer4", input_shape=(3, 64, 64), progress=False)
    # reduced: one image (was 2): what a call leaves on the model does not depend on the batch, and
    # scorecam / ablationcam run a forward pass per layer4 channel (512) for each image
    ex.explain(np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32), method)
    assert_same(before, snapshot(m))


def test_unchanged_after_errors(torch):
    m = make_model(torch)
    before = snapshot(m)
    ex = Explainer.from_torch(m, "layer4", input_shape=(3, 64, 64), progress=False)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)

    def exploding(out):
        raise RuntimeError("boom inside the target")

    with pytest.raises(RuntimeError, match="boom"):
        ex.explain(x, "gradcam", target=exploding)
    assert_same(before, snapshot(m))
    with pytest.raises(ValueError, match="out of range"):
        ex.explain(x, "gradcam", target=99)
    assert_same(before, snapshot(m))
    with pytest.raises(RuntimeError, match="boom"):
        ex.explain(x, "scorecam", target=exploding)
    assert_same(before, snapshot(m))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        ex.explain(x, "gradcam")
    assert_same(before, snapshot(m))
    # the model still trains normally afterwards
    m(torch.from_numpy(x)).sum().backward()
    assert m.layer4[0].conv1.weight.grad is not None


def test_results_do_not_depend_on_train_mode(torch):
    """Explanations use eval-mode semantics (BN running stats) whatever mode the user left."""
    m = make_model(torch)
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    ex = Explainer.from_torch(m, "layer4", progress=False)
    a = ex.explain(x, "gradcam", target=1).heatmap
    m.eval()
    b = ex.explain(x, "gradcam", target=1).heatmap
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_forward_methods_follow_weight_updates(torch, small_cnn):
    """The cached ONNX export is refreshed when the user changes the weights (no stale results)."""
    import copy

    m = copy.deepcopy(small_cnn)
    ex = Explainer.from_torch(m, "act3", progress=False)
    x = np.random.default_rng(2).normal(size=(2, 3, 16, 16)).astype(np.float32)
    before = ex.explain(x, "scorecam", target=1)
    with torch.no_grad():
        m.conv3.weight.mul_(-1.5)
        m.fc.weight.add_(0.3)
        ref = m(torch.from_numpy(x))[:, 1].numpy()
    after = ex.explain(x, "scorecam", target=1)
    np.testing.assert_allclose(after.scores, ref, rtol=1e-4)
    assert not np.allclose(before.scores, after.scores)
