"""Transformer-native explanations (issue 25): attention rollout, Chefer et al.'s method and LeGrad,
read from the attention probabilities found in the ONNX graph whatever kernel the model used.

References are written here from the papers (and jacobgil/vit-explain's rollout), on attention
tensors taken with hooks from eager (unfused) attention; LeGrad is compared with torchcam 0.5.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.core.attention import split_tokens
from agnostic_cam.errors import InputError, LayoutError, ModelError

SIZE = 64
X = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
TARGET = 3


# -- models ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit(torch):
    import timm

    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=16, embed_dim=64,
                          depth=2, num_heads=2, num_classes=10).eval()
    for b in m.blocks:
        b.attn.fused_attn = False
    return m


@pytest.fixture(scope="module")
def ex_vit(vit):
    return Explainer.from_torch(vit, "blocks.1", input_shape=(3, SIZE, SIZE), progress=False)


def hooked_attention(torch, model, x, blocks, target=None):
    """Attention probabilities (N, heads, T, T) of every block from hooks on eager attention, and their
    gradients d out[:, target] / dA when ``target`` is given."""
    store = []

    def keep(module, inputs, output):
        output.retain_grad()
        store.append(output)

    hooks = [b.register_forward_hook(keep) for b in blocks]
    try:
        with torch.enable_grad():
            out = model(torch.from_numpy(x))
            if target is not None:
                out[:, target].sum().backward()
    finally:
        for h in hooks:
            h.remove()
    maps = [a.detach().double().numpy() for a in store]
    grads = [a.grad.double().numpy() for a in store] if target is not None else None
    return maps, grads


def vit_attention(torch, vit, x, target=None):
    for b in vit.blocks:
        assert not b.attn.fused_attn
    return hooked_attention(torch, vit, x, [b.attn.attn_drop for b in vit.blocks], target)


# -- references written from the papers -------------------------------------------------------------
def ref_rollout(maps, fusion="mean", discard=0.0, prefix=1):
    """Abnar & Zuidema 2020 as in vit-explain: fuse heads, drop the lowest discard ratio (keeping the
    class token's entry), add the identity, renormalise rows, multiply through the blocks."""
    n, _, t, _ = maps[0].shape
    result = np.stack([np.eye(t)] * n)
    for a in maps:
        fused = {"mean": a.mean(1), "max": a.max(1), "min": a.min(1)}[fusion].copy()
        for i in range(n):
            flat = fused[i].reshape(-1)
            k = int(flat.size * discard)
            order = np.argsort(flat, kind="stable")[:k]
            flat[order[order != 0]] = 0
        step = (fused + np.eye(t)) / 2
        step = step / step.sum(axis=-1)[..., None]
        result = np.einsum("nij,njk->nik", step, result)
    side = int(np.sqrt(t - prefix))
    return result[:, 0, prefix:].reshape(n, side, side)


def ref_chefer(maps, grads, prefix=1):
    """Chefer, Gur & Wolf 2021 eqs. 5-6: R = I; R += mean_h((grad * A)^+) R; class-token row."""
    n, _, t, _ = maps[0].shape
    r = np.stack([np.eye(t)] * n)
    for a, g in zip(maps, grads):
        abar = np.clip(g * a, 0, None).mean(axis=1)
        r = r + np.einsum("nij,njk->nik", abar, r)
    side = int(np.sqrt(t - prefix))
    return r[:, 0, prefix:].reshape(n, side, side)


def close(got, want, tol):
    want = np.asarray(want, np.float64)
    err = float(np.abs(np.asarray(got, np.float64) - want).max() / max(np.abs(want).max(), 1e-12))
    assert err <= tol, err


# -- attention found, not hand-named ----------------------------------------------------------------
def test_attention_is_listed(ex_vit):
    att = ex_vit.layers(kind="attention")
    assert [a.block for a in att] == [0, 1]
    assert all(a.heads == 2 and a.tokens == 17 and a.op_type == "Softmax" for a in att)
    assert not {a.name for a in att} & {c.name for c in ex_vit.layers()}  # never offered as CAM layers


@pytest.mark.parametrize("fusion,discard", [("mean", 0.0), ("max", 0.9), ("min", 0.5)])
def test_rollout_equals_reference(torch, vit, ex_vit, fusion, discard):
    maps, _ = vit_attention(torch, vit, X)
    exp = ex_vit.explain(X, "attention_rollout", head_fusion=fusion, discard_ratio=discard)
    close(exp.raw, ref_rollout(maps, fusion, discard), 1e-5)
    assert exp.heatmap.shape == (2, SIZE, SIZE) and not exp.layer_used


def test_rollout_same_with_sdpa_and_onnx_file(torch, vit, ex_vit):
    from agnostic_cam import compat

    maps, _ = vit_attention(torch, vit, X)
    want = ref_rollout(maps, "max", 0.5)
    for b in vit.blocks:
        b.attn.fused_attn = True  # F.scaled_dot_product_attention: no attention tensor in eager PyTorch
    try:
        sdpa = Explainer.from_torch(vit, "blocks.1", input_shape=(3, SIZE, SIZE), progress=False)
        close(sdpa.explain(X, "attention_rollout", head_fusion="max", discard_ratio=0.5).raw, want, 1e-5)
        chefer_sdpa = sdpa.explain(X, "chefer", target=TARGET).raw
        buf = io.BytesIO()  # exported with a fixed batch of 1, as a file often is: run image by image
        compat.torch_onnx_export_legacy(vit, (torch.zeros(1, 3, SIZE, SIZE),), buf, opset_version=17,
                                        input_names=["x"])
    finally:
        for b in vit.blocks:
            b.attn.fused_attn = False
    onnx_ex = Explainer.from_onnx(buf.getvalue(), progress=False)
    assert len(onnx_ex.layers(kind="attention")) == 2
    close(onnx_ex.explain(X, "attention_rollout", head_fusion="max", discard_ratio=0.5).raw, want, 1e-5)
    maps2, grads = vit_attention(torch, vit, X, TARGET)
    close(onnx_ex.explain(X, "chefer", target=TARGET).raw, ref_chefer(maps2, grads), 1e-4)
    close(chefer_sdpa, ref_chefer(maps2, grads), 1e-4)  # no attention tensor in eager SDPA: read from the export


def test_attention_subset(torch, vit, ex_vit):
    maps, _ = vit_attention(torch, vit, X)
    name = ex_vit.layers(kind="attention")[1].name
    for pick in ([1], [name], 1):
        close(ex_vit.explain(X, "attention_rollout", attention=pick).raw, ref_rollout(maps[1:]), 1e-5)
    with pytest.raises(InputError, match="no attention tensor"):
        ex_vit.explain(X, "attention_rollout", attention=["nope"])


def test_chefer_equals_reference(torch, vit, ex_vit):
    maps, grads = vit_attention(torch, vit, X, TARGET)
    exp = ex_vit.explain(X, "chefer", target=TARGET)
    close(exp.raw, ref_chefer(maps, grads), 1e-4)
    np.testing.assert_array_equal(exp.targets, [TARGET, TARGET])


# -- LeGrad against torchcam 0.5 ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tv_vit(torch):
    import torchvision

    torch.manual_seed(1)
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2,
                                             hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    torch.nn.init.normal_(m.heads.head.weight, std=0.2)  # torchvision starts the head at zero: no gradient at all
    return m


def test_legrad_equals_torchcam(torch, tv_vit):
    from agnostic_cam import compat
    from torchcam.methods import LeGrad

    x = np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with LeGrad(tv_vit, list(tv_vit.encoder.layers)) as extractor:
        scores = tv_vit(torch.from_numpy(x))
        want = extractor([TARGET, 5], scores, normalized=False)[0].detach().numpy()
    ex = Explainer.from_torch(tv_vit, "encoder.layers.encoder_layer_2", input_shape=(3, 32, 32), progress=False)
    got = ex.explain(x, "legrad", target=[TARGET, 5])
    assert not got.degenerate.any() and np.ptp(want) > 0
    close(got.raw, want, 1e-4)
    buf = io.BytesIO()
    compat.torch_onnx_export_legacy(tv_vit, (torch.zeros(1, 3, 32, 32),), buf, opset_version=17,
                                    input_names=["x"], dynamic_axes={"x": {0: "n"}})
    close(Explainer.from_onnx(buf.getvalue(), progress=False).explain(x, "legrad", target=[TARGET, 5]).raw, want, 1e-4)


# (Hugging Face ViT, DeiT, DINOv2 (with registers), CLIP vision and open_clip: test_attention_hub.py)


# -- token bookkeeping and typed errors ------------------------------------------------------------------
def test_token_split_is_never_guessed():
    assert split_tokens(21, (64, 64), grids=[(4, 4)]) == (5, (4, 4))
    assert split_tokens(17, (64, 64), prefix=1) == (1, (4, 4))
    with pytest.raises(LayoutError, match="prefix_tokens="):
        split_tokens(17, (64, 64))  # 1 + 4x4 or 13 + 2x2: ambiguous without the patch grid
    with pytest.raises(LayoutError, match="prefix_tokens=2"):
        split_tokens(17, (64, 64), prefix=2)


def test_bad_options_and_models(ex_vit, small_cnn):
    with pytest.raises(InputError, match="head_fusion"):
        ex_vit.explain(X, "attention_rollout", head_fusion="median")
    with pytest.raises(InputError, match="discard_ratio"):
        ex_vit.explain(X, "attention_rollout", discard_ratio=1.0)
    with pytest.raises(LayoutError, match="prefix_tokens=4"):
        ex_vit.explain(X, "attention_rollout", prefix_tokens=4)
    cnn = Explainer.from_torch(small_cnn, "act3", progress=False)
    with pytest.raises(ModelError, match="no attention probabilities"):
        cnn.explain(np.zeros((1, 3, 20, 18), np.float32), "chefer")


# -- text-conditioned maps: CLIP's image tower against a text embedding -------------------------------------
def test_clip_text_conditioned_maps(torch):
    import transformers as tr

    from agnostic_cam.targets import Similarity

    torch.manual_seed(4)
    cfg = tr.CLIPVisionConfig(image_size=SIZE, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, projection_dim=16, attn_implementation="eager")
    net = tr.CLIPVisionModelWithProjection(cfg).eval()

    class Image(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(pixel_values=x).image_embeds

    text = np.random.default_rng(5).normal(size=16).astype(np.float32)  # a prompt's embedding
    ex = Explainer.from_torch(Image().eval(), "net.vision_model.encoder.layers.0", input_shape=(3, SIZE, SIZE),
                              layer_layout="tokens", progress=False)
    # (Grad-CAM at the first block: after the last one only the class token reaches the embedding)
    got = {m: ex.explain(X, m, target=Similarity(text)) for m in ("gradcam", "chefer", "legrad")}
    for m, exp in got.items():
        assert exp.heatmap.shape == (2, SIZE, SIZE) and not exp.degenerate.any(), m

    # LeGrad for CLIP written from the paper: s_l = cos(proj(post_ln(mean_t z_l)), text), E_l = mean (ds_l/dA_l)+
    vm, t = net.vision_model, torch.from_numpy(text)
    with torch.enable_grad():
        o = vm(pixel_values=torch.from_numpy(X), output_attentions=True, output_hidden_states=True)
        rel = []
        for z, a in zip(o.hidden_states[1:], o.attentions):
            e = net.visual_projection(vm.post_layernorm(z.mean(dim=1)))
            s = (e @ t) / (e.norm(dim=1) * t.norm() + 1e-8)
            (g,) = torch.autograd.grad(s.sum(), a, retain_graph=True)
            rel.append(g.clamp(min=0).mean(dim=(1, 2))[:, 1:].double().numpy())
    close(got["legrad"].raw, np.mean(rel, axis=0).reshape(2, 4, 4), 1e-4)


def test_audit_runs_attention_methods_on_a_vit_onnx_file(torch, tmp_path):
    """``agnostic-cam audit --methods attention_rollout,chefer,legrad`` on a ViT's ONNX file."""
    import csv

    from PIL import Image

    from agnostic_cam import compat
    from agnostic_cam.cli import main
    from agnostic_cam.demo.tiny import tiny_vit

    path = tmp_path / "vit.onnx"
    compat.torch_onnx_export_legacy(tiny_vit(), (torch.zeros(1, 3, 32, 32),), str(path), opset_version=17,
                                    input_names=["x"], dynamic_axes={"x": {0: "n"}})
    (tmp_path / "img").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "img" / "a.png")
    assert main(["audit", str(path), str(tmp_path / "img"), "--methods", "attention_rollout,chefer,legrad",
                 "--out", str(tmp_path / "out"), "--size", "32", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "metrics.csv")))
    assert sorted(r["method"] for r in rows) == ["attention_rollout", "chefer", "legrad"]
    assert all(r["deletion_auc"] for r in rows)


def test_deit_distillation_token_is_not_a_patch(torch):
    """timm DeiT (distilled): class + distillation token before the patches (prefix 2)."""
    import timm

    torch.manual_seed(6)
    m = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=SIZE, patch_size=16,
                          embed_dim=64, depth=2, num_heads=2, num_classes=10).eval()
    for b in m.blocks:
        b.attn.fused_attn = False
    maps, _ = hooked_attention(torch, m, X, [b.attn.attn_drop for b in m.blocks])
    assert maps[0].shape[-1] == 2 + 16
    for b in m.blocks:
        b.attn.fused_attn = True
    ex = Explainer.from_torch(m, "blocks.1", input_shape=(3, SIZE, SIZE), layer_layout="tokens", progress=False)
    close(ex.explain(X, "attention_rollout").raw, ref_rollout(maps, prefix=2), 1e-5)
    assert ex.explain(X, "legrad", target=TARGET).raw.shape == (2, 4, 4)


def test_specialised_gradient_graph_equals_the_dynamic_one(torch, vit):
    """The gradient graph is converted per input shape with its shape bookkeeping folded (ONNX Runtime's
    basic optimisations): far fewer modules, the same outputs, maps and per-block gradients."""
    from agnostic_cam import compat
    from agnostic_cam.adapters.onnx.attention_grad import AttentionGradients
    from agnostic_cam.adapters.onnx.torch_gradients import TorchGradients
    from agnostic_cam.engine.attention import find_attention
    from agnostic_cam.targets import TargetSpec
    import onnx

    buf = io.BytesIO()
    compat.torch_onnx_export_legacy(vit, (torch.zeros(1, 3, SIZE, SIZE),), buf, opset_version=17, input_names=["x"],
                                    output_names=["y"], dynamic_axes={"x": {0: "n"}})
    model = onnx.load_from_string(buf.getvalue())
    att = find_attention(model)
    ag = AttentionGradients(model, "y", [a.name for a in att], [a.output for a in att], att[-1].output)
    folded, dynamic = ag.module_for(X.shape), TorchGradients._convert(ag._graph)
    assert len(list(folded.modules())) < len(list(dynamic.modules()))  # (timm ViT, 2 blocks: 100 against 130)
    spec = TargetSpec(np.array([TARGET, 5]), 2)
    got = ag(X, spec, final=True)
    ag._modules[X.shape] = dynamic  # the same call on the graph converted as exported
    want = ag(X, spec, final=True)
    for key in ("outputs", "maps", "grads", "block_grads"):
        for g, w in zip(*((v if isinstance(v, list) else [v]) for v in (got[key], want[key]))):
            close(g, w, 1e-5)


def test_without_gradient_backend_rollout_only(torch, vit):
    from agnostic_cam import compat

    buf = io.BytesIO()
    compat.torch_onnx_export_legacy(vit, (torch.zeros(1, 3, SIZE, SIZE),), buf, opset_version=17, input_names=["x"],
                                    dynamic_axes={"x": {0: "n"}})
    ex = Explainer.from_onnx(buf.getvalue(), gradients=False, progress=False)
    assert "attention_rollout" in ex.methods and "chefer" not in ex.methods and "legrad" not in ex.methods
    with pytest.raises(ModelError, match=r"needs gradients.*onnx-grad"):
        ex.explain(X, "chefer")
    maps, _ = vit_attention(torch, vit, X)
    close(ex.explain(X, "attention_rollout").raw, ref_rollout(maps), 1e-5)
