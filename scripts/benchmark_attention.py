"""Time the attention methods against the peers' implementations on the same model and machine.

- ``attention_rollout`` vs jacobgil/vit-explain's rollout, written here as vit-explain runs it
  (hooks on each block's attention dropout of a timm ViT with eager attention, then the rollout
  in PyTorch), on timm ``vit_tiny_patch16_224`` (random seeded weights);
- ``chefer`` vs the same hooks plus a backward pass (Chefer et al.'s own repository works that way);
- ``legrad`` vs torchcam 0.5's ``LeGrad`` on a torchvision ``VisionTransformer`` of ViT-Tiny's
  shape (224 px, patch 16, 12 blocks, width 192, 3 heads; the model torchcam supports).

Ours is timed as ``Explainer.explain`` runs (one-time export and conversion excluded: each is
called once before timing); peers as users run them. Medians of ``--repeat`` alternating calls.

    python scripts/benchmark_attention.py [--batch 1] [--repeat 5] [--quick] [--update-docs]
                                          [--methods legrad,chefer] [--threads 1]

``--quick``: 2 repeats (a smoke run of the whole table, about a minute on a quiet 2-core machine);
``--update-docs`` writes the table into docs/benchmarks.md (scripts/docs_section.py);
``--methods``: a subset of the rows; ``--threads``: torch's intra-op threads for ours and the peers
alike (on a loaded machine one thread keeps thread contention out of the ratios).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch

MARK_BEGIN, MARK_END = "<!-- attention-benchmark:begin -->", "<!-- attention-benchmark:end -->"


def vit_explain_rollout(model, x, fusion="mean", discard=0.9):
    """jacobgil/vit-explain's VITAttentionRollout (rows renormalised per row)."""
    maps = []
    hooks = [b.attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(o.cpu())) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    result = torch.eye(maps[0].size(-1)).expand(x.shape[0], -1, -1)
    with torch.no_grad():
        for a in maps:
            fused = {"mean": a.mean(1), "max": a.max(1)[0], "min": a.min(1)[0]}[fusion]
            flat = fused.view(fused.size(0), -1)
            _, idx = flat.topk(int(flat.size(-1) * discard), -1, False)
            for i in range(flat.size(0)):
                keep = idx[i][idx[i] != 0]
                flat[i, keep] = 0
            eye = torch.eye(fused.size(-1))
            step = (fused + eye) / 2
            step = step / step.sum(dim=-1, keepdim=True)
            result = step @ result
    return result[:, 0, 1:]


def hooks_chefer(model, x, target):
    maps = []

    def keep(m, i, o):
        o.retain_grad()
        maps.append(o)

    hooks = [b.attn.attn_drop.register_forward_hook(keep) for b in model.blocks]
    out = model(x)
    out[:, target].sum().backward()
    for h in hooks:
        h.remove()
    t = maps[0].size(-1)
    r = torch.eye(t).expand(x.shape[0], -1, -1)
    with torch.no_grad():
        for a in maps:
            r = r + (a.grad * a).clamp(min=0).mean(1) @ r
    return r[:, 0, 1:]


def timed(fn, times: list) -> None:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)


def main() -> None:
    import timm
    import torchvision
    from torchcam.methods import LeGrad

    from agnostic_cam import Explainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 repeats: check the table regenerates, not a measurement")
    ap.add_argument("--update-docs", action="store_true")
    ap.add_argument("--methods", default="attention_rollout,chefer,legrad", help="comma-separated rows to time")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeat = 2
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(args.batch, 3, 224, 224)).astype(np.float32)
    xt = torch.from_numpy(x)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    for b in vit.blocks:
        b.attn.fused_attn = False
    ex = Explainer.from_torch(vit, "blocks.11", input_shape=(3, 224, 224), layer_layout="tokens", progress=False)
    tv = torchvision.models.VisionTransformer(224, 16, 12, 3, 192, 768, num_classes=1000).eval()
    torch.nn.init.normal_(tv.heads.head.weight, std=0.02)
    ex_tv = Explainer.from_torch(tv, "encoder.layers.encoder_layer_11", input_shape=(3, 224, 224),
                                 layer_layout="tokens", progress=False)
    cam = LeGrad(tv, list(tv.encoder.layers))

    def torchcam_legrad():
        cam.reset_hooks() if hasattr(cam, "reset_hooks") else None
        scores = tv(xt)
        return cam(0, scores)

    pairs = {
        "attention_rollout": (lambda: ex.explain(x, "attention_rollout", head_fusion="mean", discard_ratio=0.9, target=0),
                              lambda: vit_explain_rollout(vit, xt), "vit-explain rollout (hooks, timm eager)"),
        "chefer": (lambda: ex.explain(x, "chefer", target=0), lambda: hooks_chefer(vit, xt, 0),
                   "hooks + backward (timm eager)"),
        "legrad": (lambda: ex_tv.explain(x, "legrad", target=0), torchcam_legrad, "torchcam 0.5 LeGrad"),
    }
    rows = ["| method | ours (s) | peer | peer (s) | ours / peer |", "|---|---|---|---|---|"]
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(pairs))
    if unknown:
        raise SystemExit(f"unknown --methods {unknown}; choose from {sorted(pairs)}")
    if args.update_docs and wanted != list(pairs):
        raise SystemExit("--update-docs writes the whole table: leave --methods out")
    for name in wanted:
        ours, peer, label = pairs[name]
        ours(), peer()  # export / conversion / hooks set up once, not timed
        t_ours, t_peer = [], []
        for _ in range(args.repeat):
            timed(ours, t_ours)
            timed(peer, t_peer)
        a, b = statistics.median(t_ours), statistics.median(t_peer)
        rows.append(f"| {name} | {a:.3f} | {label} | {b:.3f} | {a / b:.2f}x |")
    cam.remove_hooks()
    table = "\n".join(rows)
    threads = f", {torch.get_num_threads()} torch thread(s)" if args.threads else ""
    note = (f"ViT-Tiny shape (224 px, patch 16, 12 blocks, width 192, 3 heads; random seeded weights), batch "
            f"{args.batch}, CPU, medians of {args.repeat} alternating calls, {os.cpu_count()} CPU cores{threads}, load average "
            f"{os.getloadavg()[0]:.1f} at the end. Ours runs the attention maps on ONNX Runtime and their gradients "
            "on the onnx2torch conversion of the exported graph (whatever attention kernel the model uses); the peers "
            "need eager attention (hooks) or torchvision's nn.MultiheadAttention (torchcam).")
    print(note + "\n\n" + table)
    if args.update_docs:
        from docs_section import update_section

        update_section(MARK_BEGIN, MARK_END, "Attention methods: rollout, Chefer, LeGrad", "benchmark_attention.py", note, table)


if __name__ == "__main__":
    main()
