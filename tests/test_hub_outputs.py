"""Outputs as model hubs return them, and declared layouts checked against the tensor (issue 24).

Models: tiny random-weight Hugging Face / timm / open_clip models from tests/hub_zoo.py, and small
hand-written modules returning a dict, a dataclass, a namedtuple or softmax probabilities.
References: the model's own output tensors (what ``output=`` must select) and pytorch-grad-cam's map
at the same layer with its reshape_transform (what a declared layout must give, or be refused).
"""
from __future__ import annotations

import dataclasses
import re
from collections import namedtuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pgc = pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import hub_zoo as Z  # noqa: E402
from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.core.layout import LayerLayout  # noqa: E402
from agnostic_cam.errors import LayoutError, ModelError, OptionError  # noqa: E402
from torch import nn  # noqa: E402


def images(side, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, side, side)).astype(np.float32)


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    features: torch.Tensor


Pair = namedtuple("Pair", ["logits", "features"])


class Net(nn.Module):
    """conv -> relu -> GAP -> linear; returns the logits as a tensor, dict, dataclass, namedtuple or softmax."""

    def __init__(self, kind, temperature=1.0):
        super().__init__()
        torch.manual_seed(0)
        self.kind, self.t = kind, temperature
        self.conv, self.act, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Linear(8, 4)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        f = self.act(self.conv(x))
        z = self.fc(f.mean((2, 3)))
        if self.kind == "softmax":
            return self.softmax(z / self.t)
        if self.kind == "dict+softmax":  # a 'logits' key and a final Softmax of another tensor
            return {"logits": z, "probs": self.softmax(z / self.t)}
        if self.kind == "dict":
            return {"scores": z, "features": f}
        return {"dataclass": Out, "namedtuple": Pair}[self.kind](z, f)

    def logits(self, x):
        with torch.no_grad():
            return self.fc(self.act(self.conv(torch.from_numpy(x))).mean((2, 3))).numpy()


@pytest.mark.parametrize("kind", ["dataclass", "namedtuple"])
def test_structured_outputs_explain_their_logits(kind):
    x = images(16)
    m = Net(kind)
    ex = Explainer.from_torch(m, input_shape=(3, 16, 16), progress=False)
    assert ex.layer == "act"
    e = ex.explain(x, "gradcam", target=1)
    np.testing.assert_allclose(e.scores, m.logits(x)[:, 1], rtol=1e-5, atol=1e-6)
    assert f"output: 'logits' of the model's {'Out' if kind == 'dataclass' else 'Pair'}" in ex.describe()


def test_hugging_face_outputs_and_unknown_keys_refused_at_build():
    model, side = Z.hf_vit()
    x = images(side)
    ex = Explainer.from_torch(model, progress=False)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).logits.numpy()
    np.testing.assert_allclose(ex.explain(x, "gradcam", target=2).scores, logits[:, 2], rtol=1e-5, atol=1e-6)
    same = Explainer.from_torch(model, output="logits", progress=False)  # the key, not a softmax's input
    np.testing.assert_allclose(same.explain(x, "gradcam", target=2).scores, logits[:, 2], rtol=1e-5, atol=1e-6)
    for kw in ({}, {"target_layer": "vit.layernorm"}, {"input_shape": (3, side, side)}):
        with pytest.raises(OptionError, match=r"output='probs' selects a key .* keys: \['logits'\]"):
            Explainer.from_torch(model, output="probs", progress=False, **kw)
    with pytest.raises(ModelError, match="output='pre_softmax' needs a model whose last module is nn.Softmax"):
        Explainer.from_torch(model, output="pre_softmax", progress=False)


def test_clip_towers_explain_their_embedding():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    model, side = Z.hf_clip_vision()
    assert "output: 'image_embeds'" in Explainer.from_torch(model, progress=False).describe()
    torch.manual_seed(0)
    plain = CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2)).eval()
    assert "output: 'pooler_output'" in Explainer.from_torch(plain, progress=False).describe()
    model, side = Z.open_clip_vit()
    x = images(side)
    ex = Explainer.from_torch(model, progress=False)
    with torch.no_grad():
        emb = model(torch.from_numpy(x))["image_features"].numpy()
    np.testing.assert_allclose(ex.explain(x, "gradcam", target=3).scores, emb[:, 3], rtol=1e-5, atol=1e-6)


def test_a_dict_without_a_known_key_names_its_keys():
    with pytest.raises(OptionError, match=r"none of its keys is a known score .* output=KEY \(one of \['scores', 'features'\]\)"):
        Explainer.from_torch(Net("dict"), input_shape=(3, 16, 16), progress=False)
    ex = Explainer.from_torch(Net("dict"), output="scores", input_shape=(3, 16, 16), progress=False)
    assert ex.explain(images(16), "gradcam", target=0).heatmap.shape == (2, 16, 16)


def test_pre_softmax_and_the_older_logits_spelling():
    x = images(16)
    m = Net("softmax", temperature=2.0)
    pre = Explainer.from_torch(m, output="pre_softmax", input_shape=(3, 16, 16), progress=False)
    old = Explainer.from_torch(m, output="logits", input_shape=(3, 16, 16), progress=False)
    expect = m.logits(x)[:, 1] / 2.0  # the softmax's input
    for ex in (pre, old):
        np.testing.assert_allclose(ex.explain(x, "gradcam", target=1).scores, expect, rtol=1e-5, atol=1e-6)
    assert "pre-softmax" in old.describe()
    both = Net("dict+softmax", temperature=2.0)  # a 'logits' key: 'logits' is the key, pre_softmax the softmax input
    key = Explainer.from_torch(both, output="logits", input_shape=(3, 16, 16), progress=False)
    np.testing.assert_allclose(key.explain(x, "gradcam", target=1).scores, m.logits(x)[:, 1], rtol=1e-5, atol=1e-6)
    pre = Explainer.from_torch(both, output="pre_softmax", input_shape=(3, 16, 16), progress=False)
    np.testing.assert_allclose(pre.explain(x, "gradcam", target=1).scores, expect, rtol=1e-5, atol=1e-6)


# -- declared layouts checked against the tensor --------------------------------------------------------
def suggested_layouts(message: str) -> list[str]:
    return re.findall(r"layer_layout='(\w+)'", message)


def right_or_refused(model, layer, side, layout, reference):
    """A suggested layout either runs and equals the reference map, or is refused with a LayoutError."""
    try:
        ex = Explainer.from_torch(model, layer, input_shape=(3, side, side), layer_layout=layout, progress=False)
        got = ex.explain(images(side), "gradcam", target=[0, 1]).heatmap
    except LayoutError:
        return
    assert reference is not None and np.abs(got - reference).max() <= 1e-4, f"{layout!r} gives a wrong map"


def grad_cam(model, layer, side, reshape):
    layer = dict(model.named_modules())[layer]
    with pgc.GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        return cam(input_tensor=torch.from_numpy(images(side)), targets=[ClassifierOutputTarget(0),
                                                                         ClassifierOutputTarget(1)])


@pytest.mark.parametrize("build", [Z.timm_vit, Z.timm_eva02], ids=lambda b: b.__name__)
def test_per_head_tensor_is_refused_under_every_layout(build):
    model, side = build()
    for layout in (None, "NCHW", "NHWC"):
        with pytest.raises(LayoutError, match="per-head attention tensor") as err:
            Explainer.from_torch(model, "blocks.1.attn.k_norm", input_shape=(3, side, side), layer_layout=layout,
                                 progress=False)
        for suggestion in suggested_layouts(str(err.value)):
            right_or_refused(model, "blocks.1.attn.k_norm", side, suggestion, None)


def test_token_tensor_declared_nchw_names_the_token_reading():
    model, side = Z.timm_vit()
    with pytest.raises(LayoutError, match=r"reads as tokens\(prefix=1, grid=4x4\): pass layer_layout='tokens'") as err:
        Explainer.from_torch(model, "blocks.1.norm1", input_shape=(3, side, side), layer_layout="NCHW", progress=False)
    ref = grad_cam(model, "blocks.1.norm1", side, lambda t: t[:, 1:].reshape(len(t), 4, 4, -1).permute(0, 3, 1, 2))
    assert suggested_layouts(str(err.value)) == ["tokens"]
    for suggestion in suggested_layouts(str(err.value)):
        right_or_refused(model, "blocks.1.norm1", side, suggestion, ref)


def test_channels_last_tensor_declared_nchw_names_nhwc():
    model, side = Z.timm_swin()
    with pytest.raises(LayoutError, match="reads as NHWC: pass layer_layout='NHWC'") as err:
        Explainer.from_torch(model, "norm", input_shape=(3, side, side), layer_layout="NCHW", progress=False)
    ref = grad_cam(model, "norm", side, lambda t: t.permute(0, 3, 1, 2))
    for suggestion in suggested_layouts(str(err.value)):
        right_or_refused(model, "norm", side, suggestion, ref)


def test_swin_tokens_at_a_small_input_need_no_grid():
    """64 px, patch 4, three stages: 16 tokens at the last stage; the grid (4x4) is the patch grid
    (16x16) after two 2x2 merges, with or without layer_layout='tokens'."""
    model, side = Z.hf_swin()
    wrapped = Selected(model)
    ref = grad_cam(wrapped, "model.swin.layernorm", side, lambda t: t.reshape(len(t), 4, 4, -1).permute(0, 3, 1, 2))
    for layout in (None, "tokens"):
        ex = Explainer.from_torch(model, "swin.layernorm", layer_layout=layout, progress=False)
        got = ex.explain(images(side), "gradcam", target=[0, 1]).heatmap
        assert str(ex.adapter.layer_layout) == "tokens(prefix=0, grid=4x4)"
        assert np.abs(got - ref).max() <= 1e-4
    same = Explainer.from_torch(model, "swin.layernorm", layer_layout=LayerLayout("tokens", 0, (4, 4)), progress=False)
    assert np.abs(same.explain(images(side), "gradcam", target=[0, 1]).heatmap - ref).max() <= 1e-4


class Selected(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits



def test_weight_only_tensor_is_refused():
    """A Swin's relative position bias depends on the weights only: named as the layer it is refused
    (before, Grad-CAM returned one map for two images and Eigen-CAM an ONNX Runtime error)."""
    model, side = Z.hf_swin()
    name = "swin.encoder.layers.2.blocks.1.attention.relative_position_bias"
    with pytest.raises(ModelError, match="does not depend on the input image: it is built from weights only"):
        Explainer.from_torch(model, name, input_shape=(3, side, side), progress=False)
    ex = Explainer.from_torch(model, name, progress=False)
    for method in ("gradcam", "eigencam"):
        with pytest.raises(ModelError, match="built from weights only"):
            ex.explain(images(side), method)
