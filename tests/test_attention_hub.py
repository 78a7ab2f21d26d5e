"""Issue 25, done when: Hugging Face ViT, DeiT (distillation token), DINOv2 and DINOv2-with-registers,
CLIP vision and an open_clip ViT run ``attention_rollout``, ``chefer`` and ``legrad`` from
``Explainer.from_torch(model)`` with no options, through the model's ONNX export (never the eager
fallback), and class, distillation and register tokens never appear in the patch grid.

Reduction: random small configs (64-96 px, patch 16, 2 blocks of width 32, 2 heads) instead of the
hub's 224-518 px and 12+ blocks; nothing is downloaded. References are written here: the rollout
(Abnar & Zuidema; vit-explain) and Chefer's equations on the attention probabilities the model itself
returns with eager attention (``output_attentions=True``, or recomputed from an ``nn.MultiheadAttention``'s
weights for open_clip), and LeGrad from its paper for DINOv2-with-registers.
"""
from __future__ import annotations

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.targets import Similarity
from test_attention import close, ref_chefer, ref_rollout

pytestmark = pytest.mark.filterwarnings("error::agnostic_cam.engine.eager.ExportFallbackWarning")  # never eager

CONFIG = 64  # the configs' image_size
TARGET = 3
COMMON = dict(image_size=CONFIG, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64)


def images(size: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)


def hf(torch, kind: str, attn: str):
    """The model of ``kind`` with attention kernel ``attn`` (same seeded weights for every kernel)."""
    import transformers as tr

    torch.manual_seed(3)
    if kind == "vit":
        return tr.ViTForImageClassification(tr.ViTConfig(num_labels=10, attn_implementation=attn, **COMMON)).eval()
    if kind == "deit":
        return tr.DeiTForImageClassificationWithTeacher(tr.DeiTConfig(num_labels=10, attn_implementation=attn,
                                                                      **COMMON)).eval()
    if kind == "dinov2":
        return tr.Dinov2ForImageClassification(tr.Dinov2Config(num_labels=10, attn_implementation=attn, **COMMON)).eval()
    if kind == "dinov2_reg":
        return tr.Dinov2WithRegistersForImageClassification(tr.Dinov2WithRegistersConfig(
            num_register_tokens=4, num_labels=10, attn_implementation=attn, **COMMON)).eval()
    return tr.CLIPVisionModelWithProjection(tr.CLIPVisionConfig(projection_dim=16, attn_implementation=attn,
                                                                **COMMON)).eval()


TEXT = np.random.default_rng(5).normal(size=16).astype(np.float32)  # a prompt's embedding (CLIP)


def strict_explainer(model):
    """``from_torch(model)`` with no options (an export fallback is an error: ``pytestmark``)."""
    return Explainer.from_torch(model, progress=False)


def eager_reference(torch, model, x, kind):
    """(maps, d score / d maps, hidden states, output) from the eager model's own attention probabilities."""
    with torch.enable_grad():
        o = model(pixel_values=torch.from_numpy(x), output_attentions=True, output_hidden_states=True)
        if kind == "clip":
            e, t = o.image_embeds, torch.from_numpy(TEXT)
            score = (e @ t) / (e.norm(dim=1) * t.norm() + 1e-8)
        else:
            score = o.logits[:, TARGET]
        grads = torch.autograd.grad(score.sum(), o.attentions, retain_graph=True)
    maps = [a.detach().double().numpy() for a in o.attentions]
    return maps, [g.double().numpy() for g in grads], o


# (kind, prefix tokens before the patches, input size): DINOv2 runs at a size other than its config's,
# which is what makes it resize its position embedding (antialiased bicubic for the register model)
CASES = [("vit", 1, 64), ("deit", 2, 64), ("dinov2", 1, 96), ("dinov2_reg", 5, 96), ("dinov2_reg", 5, 64),
         ("clip", 1, 64)]


@pytest.mark.parametrize("kind,prefix,size", CASES)
def test_hub_transformers_run_all_three_with_no_options(torch, kind, prefix, size):
    model, x = hf(torch, kind, "sdpa"), images(size)
    ex = strict_explainer(model)
    target = Similarity(TEXT) if kind == "clip" else TARGET
    maps, grads, out = eager_reference(torch, hf(torch, kind, "eager"), x, kind)
    side = size // 16
    assert maps[0].shape[-1] == prefix + side * side
    # the export computes what PyTorch computes (logits; CLIP: its image embedding)
    want = out.image_embeds if kind == "clip" else out.logits
    got = ex.adapter.engine(x.shape[1:]).run(x, [ex.adapter.output_name])[0]
    close(got, want.detach().numpy(), 1e-5)
    assert len(ex.layers(kind="attention")) == 2
    roll = ex.explain(x, "attention_rollout")
    close(roll.raw, ref_rollout(maps, prefix=prefix), 1e-5)  # prefix tokens dropped, patches in grid order
    close(ex.explain(x, "chefer", target=target).raw, ref_chefer(maps, grads, prefix=prefix), 1e-4)
    for method in ("legrad", "gradcam"):
        exp = ex.explain(x, method, target=target)
        assert exp.raw.shape == (2, side, side) and np.isfinite(exp.raw).all() and not exp.degenerate.any(), method
        assert exp.heatmap.shape == (2, size, size)


def test_dinov2_registers_legrad_equals_paper(torch):
    """LeGrad (Bousselham et al. 2024, eq. 4-6) written for DINOv2-with-registers' head, which reads
    cat(cls, mean of the patch tokens) of the final layernorm: s_l = head(cat(ln(m_l), ln(m_l))) with m_l
    the mean of block l's tokens; E_l = mean over heads and queries of (ds_l/dA_l)+, read at the patch
    keys (the 4 registers and the class token dropped); the map is the mean of E_l over the blocks."""
    x = images(96)
    ex = strict_explainer(hf(torch, "dinov2_reg", "sdpa"))
    net = hf(torch, "dinov2_reg", "eager")
    with torch.enable_grad():
        o = net(pixel_values=torch.from_numpy(x), output_attentions=True, output_hidden_states=True)
        rel = []
        for z, a in zip(o.hidden_states[1:], o.attentions):
            t = net.dinov2_with_registers.layernorm(z.mean(dim=1))
            s = net.classifier(torch.cat([t, t], dim=1))[:, TARGET]
            (g,) = torch.autograd.grad(s.sum(), a, retain_graph=True)
            rel.append(g.clamp(min=0).mean(dim=(1, 2))[:, 5:].double().numpy())
    close(ex.explain(x, "legrad", target=TARGET).raw, np.mean(rel, axis=0).reshape(2, 6, 6), 1e-4)


def test_open_clip_vit_against_a_prompt(torch):
    """open_clip's ViT (``nn.MultiheadAttention`` with ``need_weights=False``: no attention tensor in
    eager PyTorch) explained against a text embedding; the reference attention is recomputed from the
    blocks' own projection weights."""
    import open_clip

    torch.manual_seed(7)
    vt = open_clip.transformer.VisionTransformer(image_size=CONFIG, patch_size=16, width=32, layers=2, heads=2,
                                                 mlp_ratio=2.0, output_dim=16).eval()
    x = images(CONFIG)
    ex = strict_explainer(vt)
    maps = []

    def attention(block, inputs, output):  # softmax(q k^T / sqrt(d)) from the block's in_proj
        (h,) = inputs
        mha = block.attn
        q, k, _ = torch.nn.functional.linear(block.ln_1(h), mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        n, t, w = q.shape
        q, k = (v.reshape(n, t, mha.num_heads, w // mha.num_heads).transpose(1, 2) for v in (q, k))
        maps.append(torch.softmax(q @ k.transpose(-1, -2) / (w // mha.num_heads) ** 0.5, dim=-1).double().numpy())

    hooks = [b.register_forward_hook(attention) for b in vt.transformer.resblocks]
    try:
        with torch.no_grad():
            emb = vt(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
    assert vt.transformer.batch_first and maps[0].shape == (2, 2, 17, 17)
    close(ex.adapter.engine(x.shape[1:]).run(x, [ex.adapter.output_name])[0], emb.numpy(), 1e-5)
    close(ex.explain(x, "attention_rollout").raw, ref_rollout(maps), 1e-5)
    for method in ("chefer", "legrad", "gradcam"):
        exp = ex.explain(x, method, target=Similarity(TEXT))
        assert exp.raw.shape == (2, 4, 4) and np.isfinite(exp.raw).all() and not exp.degenerate.any(), method


def test_antialiased_resize_export_equals_pytorch(torch):
    """The opset-17 translation of antialiased bicubic and bilinear resizing (up and down, odd sizes,
    align_corners both ways) gives PyTorch's values; the model is left as it was."""
    from agnostic_cam.adapters.pytorch.checks import fingerprint

    class Resize(torch.nn.Module):
        def __init__(self, mode, size, align):
            super().__init__()
            self.mode, self.align = mode, align
            self.size, self.scale = (size, None) if isinstance(size[0], int) else (None, size)
            self.w = torch.nn.Parameter(torch.randn(1, 3, 7, 5, generator=torch.Generator().manual_seed(1)))

        def forward(self, x):  # a weight resized like a position embedding, plus the image's own resize
            w = torch.nn.functional.interpolate(self.w, size=(12, 12), mode=self.mode, align_corners=self.align,
                                                antialias=True)
            y = torch.nn.functional.interpolate(x * w, size=self.size, scale_factor=self.scale, mode=self.mode,
                                                align_corners=self.align, antialias=True)
            return y.flatten(1)

    x = images(12)
    for mode in ("bicubic", "bilinear"):
        for size, align in (((3, 11), False), ((16, 4), True), ((12, 12), False), ((0.75, 1.4), False)):
            m = Resize(mode, size, align).eval()
            before = fingerprint(m)
            ex = strict_explainer(m)
            got = ex.adapter.engine(x.shape[1:]).run(x, [ex.adapter.output_name])[0]
            with torch.no_grad():
                want = m(torch.from_numpy(x)).numpy()
            close(got, want, 1e-5)
            assert fingerprint(m) == before
    # the translation is registered only while our export runs: the user's own export still refuses the op
    import io

    from agnostic_cam import compat

    with pytest.raises(torch.onnx.errors.UnsupportedOperatorError, match="_upsample_bilinear2d_aa"):
        compat.torch_onnx_export_legacy(m, (torch.zeros(1, 3, 12, 12),), io.BytesIO(), opset_version=17)
