"""Issue 26's model list: every embeddable method on ResNet-18/50, MobileNetV3-small, EfficientNet-B0,
ConvNeXt-T (torchvision, random weights) and a timm DeiT-tiny, embedded with ``Explainer.embed`` and run on
plain ONNX Runtime (CPU): the embedded file's original output against the exported graph's, and its
``saliency`` / ``saliency_raw`` against ``explain(x, method)``. With ``--bench``, also the median time
of one embedded inference against the plain forward pass (same session options, same machine, same run).

    python scripts/embed_check.py [--size 64] [--batch 2] [--bench] [--models resnet18,deit_tiny]
    python scripts/embed_check.py --bench --update-docs   # docs/benchmarks.md's timing table (224 px, batch 4)

Prints a Markdown table (docs/benchmarks.md records one). A method that cannot be embedded on a model
(CAM / Grad-CAM on a head that is not global-average-pool + linear) is listed with the error's first words.
"""
from __future__ import annotations

import argparse
import sys
import warnings
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.errors import AgnosticCamError  # noqa: E402

METHODS = ["cam", "gradcam", "activation_map", "eigencam", "reciprocam", "vit_reciprocam"]


def deit():
    import timm

    from tests.vit_helpers import randomise_norms

    return randomise_norms(timm.models.vision_transformer.VisionTransformer(
        img_size=SIZE, patch_size=16, embed_dim=192, depth=12, num_heads=3, num_classes=1000).eval())


MODELS = {  # name: (builder, layer, methods)
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), "layer4", METHODS[:5]),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), "layer4", METHODS[:5]),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None), "features", METHODS[:5]),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(weights=None), "features", METHODS[:5]),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(weights=None), "features", METHODS[:5]),
    "deit_tiny": (deit, "blocks.11.norm1", ["cam", "activation_map", "eigencam", "reciprocam", "vit_reciprocam"]),
}


def providers() -> list[str]:
    """The CUDA provider first where this onnxruntime build has it (a GPU machine), then the CPU's."""
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


def session(path):
    """A session for timing. Its thread pool does not spin after a run: the benchmark interleaves two
    sessions, and the idle one's spinning threads would take the cores from the other (both then run
    about 2x slower on 2 cores, and the fastest-run ratio becomes noise)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=providers())


def branch_share(path: Path, x: np.ndarray, runs: int = 3) -> float:
    """The explanation branch's share of the embedded file's kernel time, from ONNX Runtime's profiler
    (nodes named ``xai/...``; the same runs time both parts, so load that slows both alike cancels out)."""
    import json

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    s = ort.InferenceSession(str(path), opts, providers=providers())
    s.run(None, {"input": x})
    for _ in range(runs):
        s.run(None, {"input": x})
    events = json.loads(Path(s.end_profiling()).read_text())
    total = ours = 0
    for ev in events:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            total += ev["dur"]
            ours += ev["dur"] if ev["name"].startswith("xai/") else 0
    return ours / max(total, 1)


def time_ratio(embedded, plain, x, reps):
    """Embedded / plain time per inference, the two runs interleaved (load from other processes hits both
    alike): (ratio of the medians, ratio of the fastest runs, the plain median in seconds). The fastest
    run is the least disturbed by other processes; on a quiet machine the two ratios agree."""
    feed = {"input": x}
    embedded.run(None, feed), plain.run(None, feed)
    ts = {"e": [], "p": []}
    for _ in range(reps):
        for key, sess in (("p", plain), ("e", embedded)):
            t = time.perf_counter()
            sess.run(None, feed)
            ts[key].append(time.perf_counter() - t)
    return (float(np.median(ts["e"]) / np.median(ts["p"])), float(min(ts["e"]) / min(ts["p"])),
            float(np.median(ts["p"])))


BENCH_DOCS = "python scripts/embed_check.py --bench --update-docs"  # the command that regenerates the docs table
BENCH_DEFAULTS = {"size": 224, "batch": 4, "reps": 10, "models": "resnet18,resnet50,efficientnet_b0,deit_tiny"}


def main() -> None:
    global SIZE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=None, help="input size (64; --bench: 224)")
    ap.add_argument("--batch", type=int, default=None, help="images per inference (2; --bench: 4)")
    ap.add_argument("--bench", action="store_true", help="also time embedded / plain inferences")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--models", default=None, help="comma-separated (all; --bench: " + BENCH_DEFAULTS["models"] + ")")
    ap.add_argument("--update-docs", action="store_true",
                    help="with --bench and the default settings: write the table into docs/benchmarks.md")
    args = ap.parse_args()
    for k, v in BENCH_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v if args.bench else {"size": 64, "batch": 2, "models": ",".join(MODELS)}[k])
    if args.update_docs and not (args.bench and all(getattr(args, k) == v for k, v in BENCH_DEFAULTS.items())):
        ap.error(f"--update-docs writes the benchmark table of `{BENCH_DOCS}`: use --bench with the default "
                 "--size, --batch, --reps and --models")
    SIZE = args.size
    warnings.simplefilter("ignore")  # degenerate maps are marked in the table
    x = np.random.default_rng(0).random((args.batch, 3, SIZE, SIZE), dtype=np.float32)
    tmp = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    bench = (" embedded / plain (medians) | embedded / plain (fastest runs) | branch's share of the kernel time |"
             if args.bench else "")
    lines = ["| model | layer | method | output diff | saliency diff | raw diff (rel.) |" + bench,
             "|---|---|---|---|---|---|" + ("---|---|---|" if args.bench else "")]
    print("\n".join(lines), flush=True)
    for name in args.models.split(","):
        build, layer, methods = MODELS[name]
        torch.manual_seed(0)
        ex = Explainer.from_torch(build().eval(), layer, input_shape=(3, SIZE, SIZE), progress=False)
        plain = tmp / f"{name}.onnx"
        model = onnx.ModelProto()
        model.CopyFrom(ex.adapter.engine((3, SIZE, SIZE)).model)
        keep = [o for o in model.graph.output if o.name == "output"]  # the model as exported, its own output only
        del model.graph.output[:]
        model.graph.output.extend(keep)
        onnx.save(model, plain)
        ps = session(plain)
        ref = ps.run(["output"], {"input": x})[0]
        for m in methods:
            f = tmp / f"{name}_{m}.onnx"
            try:
                ex.embed(f, m)
            except AgnosticCamError as e:
                lines.append(f"| {name} | {layer} | {m} | not embeddable: {str(e)[:70]}... | | |" + (" | | |" if args.bench else ""))
                print(lines[-1], flush=True)
                continue
            s = session(f)
            out, sal, raw = s.run(["output", "saliency", "saliency_raw"], {"input": x})
            e = ex.explain(x, m)
            flat = "" if e.degenerate is None or not np.any(e.degenerate) else " (degenerate map: rounding noise)"
            row = (f"| {name} | {layer} | {m} | {np.abs(out - ref).max():.1e} | {np.abs(sal - e.heatmap).max():.1e}{flat} | "
                   f"{np.abs(raw - e.raw).max() / (np.abs(e.raw).max() + 1e-30):.1e} |")
            if args.bench:
                med, fast, t_plain = time_ratio(s, ps, x, args.reps)
                # a Recipro-CAM tail's nodes fuse with each other under new names (BiasGelu_...): not counted
                share = "n/a" if "reciprocam" in m else f"{100 * branch_share(f, x):.1f}%"
                row += f" {med:.2f}x (plain {1000 * t_plain:.0f} ms) | {fast:.2f}x | {share} |"
            lines.append(row)
            print(row, flush=True)
    print(f"{time.perf_counter() - started:.0f} s; providers {providers()}")
    if args.update_docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from docs_section import update_section

        note = (f"Generated by `{BENCH_DOCS}` (batch {args.batch} at {SIZE} x {SIZE}, {args.reps} interleaved runs "
                f"of each file, ONNX Runtime {ort.__version__}, providers {', '.join(providers())}).")
        update_section("<!-- embed-benchmark:begin -->", "<!-- embed-benchmark:end -->", "Explanations inside the model",
                       "embed_check.py", note, "\n".join(lines))


if __name__ == "__main__":
    main()
