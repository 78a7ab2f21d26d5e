"""Backward-rule policy (issue 18, issue 12): which activations a guided/deconv rule applies to,
and refusing partly-ReLU models unless ``partial_rules=True``. See agnostic_cam/core/relu_policy.py."""
from __future__ import annotations

import io

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.errors import ModelError

RULE_METHODS = ("guided_backprop", "deconvnet", "guided_gradcam")


@pytest.fixture(scope="module")
def mixed(torch):
    """A tiny CNN mixing an nn.SiLU module with a functional F.relu call (never seen as a module)."""
    from torch import nn
    import torch.nn.functional as F

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.a1 = nn.Conv2d(3, 8, 3, padding=1), nn.SiLU()
            self.c2, self.c3 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = F.relu(self.c2(self.a1(self.c1(x))))
            return self.fc(torch.relu(self.c3(x)).mean((2, 3)))

    torch.manual_seed(0)
    return Mixed().eval()


@pytest.fixture(scope="module")
def x16():
    return np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)


def test_partly_relu_cnn_refused_by_default_and_runs_with_the_option(torch, mixed, x16):
    ex = Explainer.from_torch(mixed, "c3", input_shape=(3, 16, 16))
    census = ex.adapter.activation_census()
    assert census.summary() == "2 of 3 activations are ReLUs (2 ReLU); the other 1: 1 SiLU"  # F.relu counted
    for m in RULE_METHODS:
        assert m not in ex.methods
        with pytest.raises(ModelError, match=r"only 2 of 3 activations are ReLUs .*partial_rules=True"):
            ex.explain(x16, m)
    assert {"saliency", "gradcam", "integrated_gradients"} <= set(ex.methods)
    # with the option: the ReLU calls are guided, the SiLU keeps its true gradient
    g = ex.explain(x16, "guided_backprop", partial_rules=True)
    plain = ex.explain(x16, "saliency")
    assert g.raw.shape == plain.raw.shape and not np.allclose(g.raw, plain.raw)
    ex.partial_rules = True
    assert set(RULE_METHODS) <= set(ex.methods)
    np.testing.assert_array_equal(ex.explain(x16, "guided_backprop").raw, g.raw)


def test_mobilenet_v3_large_refused_by_default(torch):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_large(weights=None).eval()
    ex = Explainer.from_torch(model, "features.16", input_shape=(3, 64, 64))
    assert ex.adapter.activation_census().summary() == (
        "19 of 48 activations are ReLUs (19 ReLU); the other 29: 21 Hardswish, 8 Hardsigmoid")
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert "guided_backprop" not in ex.methods and "deconvnet" not in ex.methods
    for m in ("guided_backprop", "deconvnet", "guided_gradcam"):
        with pytest.raises(ModelError, match="19 of 48 activations are ReLUs"):
            ex.explain(x, m)
    e = ex.explain(x, "deconvnet", partial_rules=True)
    assert e.raw.shape == (1, 3, 64, 64) and np.isfinite(e.raw).all() and np.abs(e.raw).max() > 0
    with pytest.raises(ModelError, match="partial_rules"):
        ex.deconv_reconstruction(x, top_k=1)


def test_no_relu_model_refused_and_not_listed(torch, x16):
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3), nn.SiLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    ex = Explainer.from_torch(model, "2", input_shape=(3, 16, 16))
    assert not any(m in ex.methods for m in RULE_METHODS)
    with pytest.raises(ModelError, match="has none"):
        ex.explain(x16, "guided_backprop", partial_rules=True)


class Relu6Probe:
    """out = sum(a * act(x)) over one channel: d out / dx is ``a`` through the activation, so the
    rules' golden values are written down by hand."""

    @staticmethod
    def build(torch, act):
        from torch import nn

        class Probe(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 1, 1, bias=False)
                nn.init.ones_(self.conv.weight)
                self.register_buffer("a", torch.tensor([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0], [7.0, 8.0, -9.0]]))

            def forward(self, x):
                return (self.a * act(self.conv(x))).sum(dim=(2, 3))  # (N, 1)

        return Probe().eval()


@pytest.mark.parametrize("kind", ["relu6_module", "hardtanh0", "clamp", "clamp_inplace"])
def test_relu6_and_clip_follow_the_rule_in_torch_and_onnx(torch, kind):
    from torch import nn

    act = {"relu6_module": nn.ReLU6(), "hardtanh0": nn.Hardtanh(0.0, 6.0),
           "clamp": lambda t: torch.clamp(t, min=0, max=6), "clamp_inplace": lambda t: t.clone().clamp_(0, 6)}[kind]
    model = Relu6Probe.build(torch, act)
    x = np.array([[-2.0, 1.0, 3.0], [7.0, 0.5, -1.0], [5.0, 9.0, 2.0]], np.float32)[None, None]
    a = model.a.numpy()
    inside = (x[0, 0] > 0) & (x[0, 0] < 6)
    want = {"saliency": np.abs(a * inside), "guided_backprop": np.maximum(a, 0) * inside,
            "deconvnet": np.maximum(a, 0)}
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 1, 3, 3),), buf, dynamo=False, opset_version=17, input_names=["input"])
    exs = {"torch": Explainer.from_torch(model, "conv", input_shape=(1, 3, 3)),
           "onnx": Explainer.from_onnx(buf.getvalue(), target_layer=None)}
    for fw, ex in exs.items():
        census = ex.adapter.activation_census((1, 3, 3))
        assert len(census.relus) == 1 and not census.others, (fw, census)
        for m, ref in want.items():
            raw = ex.explain(x, m, target=0).raw[0, 0]
            got = np.abs(raw) if m == "saliency" else raw
            np.testing.assert_allclose(got, ref, atol=1e-6, err_msg=f"{fw} {m}")


def test_onnx_census_of_an_exported_partly_relu_model(torch, mixed):
    buf = io.BytesIO()
    torch.onnx.export(mixed, (torch.zeros(1, 3, 16, 16),), buf, dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    ex = Explainer.from_onnx(buf.getvalue(), target_layer=None)
    census = ex.adapter.activation_census()
    assert (len(census.relus), len(census.others)) == (2, 1)  # SiLU exported as Sigmoid * x
    assert "guided_backprop" not in ex.methods
    with pytest.raises(ModelError, match="only 2 of 3"):
        ex.explain(np.zeros((1, 3, 16, 16), np.float32), "guided_backprop")
