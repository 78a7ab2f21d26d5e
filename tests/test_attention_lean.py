"""The gradient graph behind the attention methods, made cheaper without changing what it computes
(issue 25, LeGrad's speed): the lean rewrite of the onnx2torch module (bit-identical), the GELU
fusion (PyTorch's own GELU, within float32 rounding), the one backward pass for every block score
(equal to one backward pass per block), and the cheaper weight fingerprint.

Models are tiny (32-64 px, 2-3 blocks, width 32-64) with seeded random weights: the rewrites are
graph-level, so a small ViT exercises every node kind a ViT-Tiny export has.
"""
from __future__ import annotations

import copy
import io

import numpy as np
import pytest

SIZE = 64
X = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)


def export(torch, model, size):
    from agnostic_cam import compat
    import onnx

    buf = io.BytesIO()
    compat.torch_onnx_export_legacy(model, (torch.zeros(1, 3, size, size),), buf, opset_version=17,
                                    input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
    return onnx.load_from_string(buf.getvalue())


def gradients(model, final):
    from agnostic_cam.adapters.onnx.attention_grad import AttentionGradients
    from agnostic_cam.engine.attention import find_attention

    att = find_attention(model)
    return AttentionGradients(model, "y", [a.name for a in att], [a.output for a in att], att[-1].output, final)


@pytest.fixture(scope="module")
def timm_vit(torch):
    import timm

    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=16, embed_dim=64,
                          depth=3, num_heads=2, num_classes=10).eval()
    for b in m.blocks:
        b.attn.fused_attn = False
    return m


@pytest.fixture(scope="module")
def tv_vit(torch):
    import torchvision

    torch.manual_seed(1)
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2,
                                             hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    torch.nn.init.normal_(m.heads.head.weight, std=0.2)
    return m


def per_block(torch, mod, x, k, target=3):
    """d s_l / dA_l, one autograd call per block (what the graph computes without stops)."""
    with torch.enable_grad():
        res = mod(torch.from_numpy(x).requires_grad_(True))
        maps, heads = res[1:1 + k], res[1 + k:]
        return [torch.autograd.grad(s[:, target].sum(), a, retain_graph=True)[0] for a, s in zip(maps, heads)]


def test_lean_graph_is_bit_identical(torch, timm_vit):
    """Folded constants, direct calls and dropped dead nodes: the same outputs and block gradients, bit
    for bit, with a fraction of the module calls."""
    from torch import fx

    from agnostic_cam.adapters.onnx.attention_grad import specialised
    from agnostic_cam.adapters.onnx.lean import lean
    from agnostic_cam.adapters.onnx.torch_gradients import TorchGradients

    ag = gradients(export(torch, timm_vit, SIZE), final=True)
    orig = TorchGradients._convert(specialised(ag._graph, X.shape))
    slim = lean(fx.GraphModule(orig, copy.deepcopy(orig.graph)))
    calls = [n for n in slim.graph.nodes if n.op == "call_module"]
    before = [n for n in orig.graph.nodes if n.op == "call_module"]
    assert len(calls) * 10 < len(before), (len(calls), len(before))  # (3 blocks: 2 module calls left of 172)
    with torch.no_grad():
        want, got = orig(torch.from_numpy(X)), slim(torch.from_numpy(X))
    assert len(want) == len(got) == 1 + 2 * 3
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    k = len(ag.names)
    assert all(torch.equal(a, b) for a, b in zip(per_block(torch, orig, X, k), per_block(torch, slim, X, k)))


def test_gelu_fused_into_torch_gelu(torch):
    """An exported nn.GELU (Div, Erf, Add, Mul, Mul) becomes one F.gelu: PyTorch's values to float32
    rounding, where the five-node arithmetic differs from them by a few ulps."""
    from torch import fx
    from torch.nn import functional as F

    from agnostic_cam.adapters.onnx.lean import fuse_gelu, lean
    from agnostic_cam.adapters.onnx.torch_gradients import TorchGradients
    from agnostic_cam import compat
    import onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 16), torch.nn.GELU(),
                              torch.nn.Linear(16, 4)).eval()
    buf = io.BytesIO()
    compat.torch_onnx_export_legacy(net, (torch.zeros(1, 8),), buf, opset_version=17, input_names=["x"])
    gm = lean(TorchGradients._convert(onnx.load_from_string(buf.getvalue())))
    assert sum(n.target is torch.erf for n in gm.graph.nodes) == 2
    assert fuse_gelu(gm) == 2
    gm.graph.eliminate_dead_code()
    gm.recompile()
    assert not any(n.target is torch.erf for n in gm.graph.nodes)
    assert sum(n.target is F.gelu for n in gm.graph.nodes) == 2
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(gm(x).numpy(), net(x).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("which", ["timm_vit", "tv_vit"])
def test_one_backward_equals_one_per_block(torch, request, which):
    """With the stream cut after each block, one backward pass of sum_l s_l gives every d s_l / dA_l:
    equal to one backward pass per block (LeGrad's definition) on the same converted graph."""
    model = request.getfixturevalue(which)
    size = SIZE if which == "timm_vit" else 32
    x = np.random.default_rng(3).normal(size=(2, 3, size, size)).astype(np.float32)
    from agnostic_cam.targets import TargetSpec

    onnx_model = export(torch, model, size)
    fast, ref = gradients(onnx_model, final=False), gradients(onnx_model, final=True)
    spec = TargetSpec(np.array([3, 5]), 2)
    got, want = fast(x, spec, final=False), ref(x, spec, final=False)
    assert fast.module_for(x.shape).agnostic_cam_stops and not ref.module_for(x.shape).agnostic_cam_stops
    assert len(got["block_grads"]) == 3
    for g, w in zip(got["block_grads"], want["block_grads"]):
        assert np.abs(w).max() > 0
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-7 * np.abs(w).max())
    for g, w in zip(got["maps"], want["maps"]):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(Exception, match="block scores only"):
        fast(x, spec, final=True)


def toy_graph(torch, cross: bool):
    """Two 'blocks' z_l = A_l * z_{l-1} + z_{l-1}, A_l = softmax(z_{l-1}); block scores s_l from a mean
    named as with_block_heads names it. ``cross``: s_0 also reads z_1 (a head that reads a later block)."""
    from torch import fx

    class Mean(torch.nn.Module):
        def forward(self, z):
            return z.mean(-1)

    root = torch.nn.Module()
    root.add_module("agnostic_cam_block0/mean", Mean())
    root.add_module("agnostic_cam_block1/mean", Mean())
    g = fx.Graph()
    x = g.placeholder("x")
    a0 = g.call_function(torch.softmax, (x, -1))
    z0 = g.call_function(torch.add, (g.call_function(torch.mul, (a0, x)), x))
    a1 = g.call_function(torch.softmax, (z0, -1))
    z1 = g.call_function(torch.add, (g.call_function(torch.mul, (a1, z0)), z0))
    s0 = g.call_module("agnostic_cam_block0/mean", (z0,))
    if cross:
        s0 = g.call_function(torch.add, (s0, g.call_function(torch.mean, (z1, -1))))
    s1 = g.call_module("agnostic_cam_block1/mean", (z1,))
    g.output([g.call_function(torch.sum, (z1, -1)), a0, a1, s0, s1])
    return fx.GraphModule(root, g)


@pytest.mark.parametrize("cross", [False, True])
def test_stops_only_where_exact(torch, cross):
    """The cut is made only where the graph shows it exact: a block score that reads a later block's
    tokens keeps the one-backward-per-block computation (the graph is left as it was)."""
    from agnostic_cam.adapters.onnx.attention_grad import add_stops

    x = np.random.default_rng(0).normal(size=(2, 4, 5)).astype(np.float32)
    want = [g.numpy() for g in per_block(torch, toy_graph(torch, cross), x, 2, target=1)]
    gm = toy_graph(torch, cross)
    assert add_stops(gm, 2) is (not cross)
    with torch.enable_grad():
        res = gm(torch.from_numpy(x).requires_grad_(True))
        if cross:
            got = [torch.autograd.grad(s[:, 1].sum(), a, retain_graph=True)[0] for a, s in zip(res[1:3], res[3:])]
        else:
            got = torch.autograd.grad(res[3][:, 1].sum() + res[4][:, 1].sum(), list(res[1:3]))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-6, atol=1e-7)
    assert sum(n.op == "call_function" and n.target.__name__ == "_stop" for n in gm.graph.nodes) == (0 if cross else 2)


def test_fingerprint_sees_edits_in_every_float_dtype(torch):
    """Row sums (float32, float64) and whole-tensor sums (half precision) both see a whole-tensor edit,
    a one-element edit of a 2-D weight and a sign flip; NaN is named."""
    from agnostic_cam.adapters.pytorch.checks import fingerprint
    from agnostic_cam.errors import NonFiniteError

    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.Linear(96, 3)).to(dtype)
        base = fingerprint(m)
        w = m[0].weight
        for edit in (lambda t: t.mul_(1.01), lambda t: t.neg_(), lambda t: t[17, 5].add_(0.25)):
            saved = w.detach().clone()
            with torch.no_grad():
                edit(w.data)
            assert fingerprint(m) != base, (dtype, edit)
            with torch.no_grad():
                w.data.copy_(saved)
            assert fingerprint(m) == base
        with torch.no_grad():
            m[1].weight.data[1, 2] = float("nan")
        with pytest.raises(NonFiniteError, match=r"'1\.weight'"):
            fingerprint(m)
