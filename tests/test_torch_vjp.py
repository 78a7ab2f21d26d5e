"""TorchAdapter's general primitives (vjp, activations, layer_names, conv_weights, input_gradients)
against torch.autograd directly and a hand-written, stage-by-stage backward pass for the ReLU rules."""
import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.targets import TargetSpec


@pytest.fixture(scope="module")
def tiny(torch):
    """conv - ReLU(inplace) - conv - F.relu - conv - Tensor.relu - GAP - linear: every way to call a ReLU."""
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 6, 3, padding=1)
            self.r1 = nn.ReLU(inplace=True)
            self.c2 = nn.Conv2d(6, 8, 3, padding=1)
            self.c3 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = self.r1(self.c1(x))
            x = nn.functional.relu(self.c2(x))
            x = self.c3(x).relu()
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(5)
    return Tiny().eval()


@pytest.fixture(scope="module")
def xs():
    return np.random.default_rng(3).normal(size=(3, 3, 10, 9)).astype(np.float32)


def rule_backward(g, z, rule):
    """The rules as written in the papers, on the ReLU's pre-activation z."""
    if rule == "vanilla":
        return g * (z > 0)
    if rule == "guided":
        return g.clamp(min=0) * (z > 0)
    return g.clamp(min=0)


def hand_backward(torch, m, x, cot, rule):
    """Stage-wise backprop of <output, cot> through Tiny, applying ``rule`` at each ReLU by hand."""
    xt = torch.from_numpy(x).requires_grad_(True)
    z1 = m.c1(xt)
    y1 = z1.clamp(min=0).detach().requires_grad_(True)
    z2 = m.c2(y1)
    y2 = z2.clamp(min=0).detach().requires_grad_(True)
    z3 = m.c3(y2)
    y3 = z3.clamp(min=0).detach().requires_grad_(True)
    out = m.fc(y3.mean((2, 3)))
    (g,) = torch.autograd.grad(out, y3, torch.from_numpy(cot))
    (g,) = torch.autograd.grad(z3, y2, rule_backward(g, z3, rule))
    (g,) = torch.autograd.grad(z2, y1, rule_backward(g, z2, rule))
    (g,) = torch.autograd.grad(z1, xt, rule_backward(g, z1, rule))
    return out.detach().numpy(), g.numpy()


@pytest.mark.parametrize("rule", ["vanilla", "guided", "deconv"])
def test_vjp_rules_match_hand_backward(torch, tiny, xs, rule):
    ex = Explainer.from_torch(tiny, "c3")
    cot = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    a, gx = ex.adapter.vjp(xs, None, lambda out: cot, rule)
    ref_out, ref = hand_backward(torch, tiny, xs, cot, rule)
    np.testing.assert_allclose(a, ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, ref, rtol=1e-4, atol=1e-6)
    assert gx.dtype == np.float32 and gx.shape == xs.shape
    if rule != "vanilla":  # the rule really changes the result
        _, ref_v = hand_backward(torch, tiny, xs, cot, "vanilla")
        assert np.abs(gx - ref_v).max() > 0.1 * np.abs(ref_v).max()


def test_vjp_vanilla_matches_autograd_on_resnet(torch, resnet18):
    x = np.random.default_rng(0).normal(size=(2, 3, 48, 48)).astype(np.float32)
    ex = Explainer.from_torch(resnet18, "layer3")
    seen = {}

    def cot(a):
        seen["a"] = a
        return np.cos(a)  # a cotangent that depends on the forward value

    a, gx = ex.adapter.vjp(x, "layer3.1", cot)
    xt = torch.from_numpy(x).requires_grad_(True)
    store = []
    h = resnet18.layer3[1].register_forward_hook(lambda m, i, o: store.append(o))
    try:
        resnet18(xt)
    finally:
        h.remove()
    (ref,) = torch.autograd.grad(store[0], xt, torch.cos(store[0].detach()))
    assert a.shape == (2, 256, 3, 3)
    np.testing.assert_allclose(a, store[0].detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(seen["a"], a)
    np.testing.assert_allclose(gx, ref.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rule", ["guided", "deconv"])
def test_vjp_of_a_layer_under_a_rule(torch, tiny, xs, rule):
    """A layer below the output: only the ReLUs below it are crossed (here r1 inside c2's input)."""
    ex = Explainer.from_torch(tiny, "c3")
    cot = np.random.default_rng(2).normal(size=(3, 8, 10, 9)).astype(np.float32)
    a, gx = ex.adapter.vjp(xs, tiny.c2, lambda _: cot, rule)
    xt = torch.from_numpy(xs).requires_grad_(True)
    z1 = tiny.c1(xt)
    y1 = z1.clamp(min=0).detach().requires_grad_(True)
    z2 = tiny.c2(y1)
    (g,) = torch.autograd.grad(z2, y1, torch.from_numpy(cot))
    (ref,) = torch.autograd.grad(z1, xt, rule_backward(g, z1, rule))
    np.testing.assert_allclose(a, z2.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, ref.numpy(), rtol=1e-4, atol=1e-6)


def test_input_gradients_targets(torch, tiny, xs):
    ex = Explainer.from_torch(tiny, "c3")
    g = ex.adapter.input_gradients(xs, TargetSpec([0, 3, 1], 3))
    xt = torch.from_numpy(xs).requires_grad_(True)
    out = tiny(xt)
    (ref,) = torch.autograd.grad(out[[0, 1, 2], [0, 3, 1]].sum(), xt)
    np.testing.assert_allclose(g.input_grads, ref.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(g.classes, [0, 3, 1])
    np.testing.assert_allclose(g.scores, out[[0, 1, 2], [0, 3, 1]].detach().numpy(), rtol=1e-5)
    # a callable target: its own gradient through autograd
    fn = lambda o: o[:, 2] - 0.5 * o[:, 0] ** 2  # noqa: E731
    g = ex.adapter.input_gradients(xs, TargetSpec(fn, 3), rule="guided")
    o = out.detach()
    cot = torch.zeros_like(o)
    cot[:, 2] = 1
    cot[:, 0] = -o[:, 0]
    _, ref = hand_backward(torch, tiny, xs, cot.numpy(), "guided")
    assert g.classes is None
    np.testing.assert_allclose(g.scores, fn(o).numpy(), rtol=1e-5)
    np.testing.assert_allclose(g.input_grads, ref, rtol=1e-4, atol=1e-6)


def test_activations_layer_names_conv_weights(torch, tiny, xs):
    ex = Explainer.from_torch(tiny, "c3")
    ad = ex.adapter
    assert ad.layer_names() == ["c1", "r1", "c2", "c3", "fc"]
    a_c1, a_r1, a_fc = ad.activations(xs, ["c1", tiny.r1, "fc"])
    with torch.no_grad():
        z1 = tiny.c1(torch.from_numpy(xs))
        ref_out = tiny(torch.from_numpy(xs))
    np.testing.assert_allclose(a_c1, z1.numpy(), rtol=1e-5, atol=1e-6)  # not clobbered by the in-place ReLU
    np.testing.assert_allclose(a_r1, z1.clamp(min=0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a_fc, ref_out.numpy(), rtol=1e-5, atol=1e-6)
    w = ad.conv_weights("c2")
    assert w.shape == (8, 6, 3, 3) and w.dtype == np.float32
    np.testing.assert_array_equal(w, tiny.c2.weight.detach().numpy())
    with pytest.raises(ValueError, match="not a 2-D convolution"):
        ad.conv_weights("fc")
    with pytest.raises(ValueError, match="closest names"):
        ad.vjp(xs, "c4", lambda a: a)
    with pytest.raises(ValueError, match="unknown backward rule"):
        ad.vjp(xs, None, lambda a: a, rule="guidedd")
    with pytest.raises(ValueError, match="shape"):
        ad.vjp(xs, None, lambda a: a[:, :2])


def test_model_untouched_and_relus_normal_afterwards(torch, tiny, xs):
    from test_model_state import assert_same, snapshot

    ex = Explainer.from_torch(tiny, "c3")
    before = snapshot(tiny)

    def boom(a):
        raise RuntimeError("boom in cotangent")

    with pytest.raises(RuntimeError, match="boom"):
        ex.adapter.vjp(xs, "c2", boom, rule="guided")
    assert_same(before, snapshot(tiny))
    ex.adapter.vjp(xs, "c2", lambda a: a, rule="deconv")
    assert_same(before, snapshot(tiny))
    # after the block, every ReLU has its ordinary gradient again
    cot = np.ones((3, 4), np.float32)
    xt = torch.from_numpy(xs).requires_grad_(True)
    (g,) = torch.autograd.grad(tiny(xt), xt, torch.from_numpy(cot))
    np.testing.assert_allclose(g.numpy(), hand_backward(torch, tiny, xs, cot, "vanilla")[1], rtol=1e-4, atol=1e-6)


def test_rules_refuse_models_whose_relus_cannot_be_seen(torch, tiny, xs):
    from torch import nn

    gelu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3))
    ex = Explainer.from_torch(gelu, "0")
    ex.adapter.vjp(xs, None, lambda a: a)  # vanilla works
    with pytest.raises(ValueError, match="no ReLU was called"):
        ex.adapter.vjp(xs, None, lambda a: a, rule="guided")
    scripted = nn.Sequential(torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())), nn.Conv2d(4, 4, 3))
    ex = Explainer.from_torch(scripted, "1")
    with pytest.raises(ValueError, match="TorchScript"):
        ex.explain(xs, "guided_backprop", target=0)
