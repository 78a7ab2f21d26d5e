"""Issue 26's model list: every embeddable method on ResNet-18/50, MobileNetV3-small, EfficientNet-B0,
ConvNeXt-T (torchvision, random weights) and a timm DeiT-tiny, embedded with ``Explainer.embed`` and run on
plain ONNX Runtime (CPU): the embedded file's original output against the exported graph's, and its
``saliency`` / ``saliency_raw`` against ``explain(x, method)``. With ``--bench``, also the median time
of one embedded inference against the plain forward pass (same session options, same machine, same run).

    python scripts/embed_check.py [--size 64] [--batch 2] [--bench] [--models resnet18,deit]

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


def session(path):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_ratio(embedded, plain, x, reps):
    """Median embedded / plain time per inference, the two runs interleaved (load from other processes
    hits both alike)."""
    feed = {"input": x}
    embedded.run(None, feed), plain.run(None, feed)
    ts = {"e": [], "p": []}
    for _ in range(reps):
        for key, sess in (("p", plain), ("e", embedded)):
            t = time.perf_counter()
            sess.run(None, feed)
            ts[key].append(time.perf_counter() - t)
    return float(np.median(ts["e"]) / np.median(ts["p"])), float(np.median(ts["p"]))


def main() -> None:
    global SIZE
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    SIZE = args.size
    warnings.simplefilter("ignore")  # degenerate maps are marked in the table
    x = np.random.default_rng(0).random((args.batch, 3, SIZE, SIZE), dtype=np.float32)
    tmp = Path(tempfile.mkdtemp())
    print("| model | layer | method | output diff | saliency diff | raw diff (rel.) |" + (" embedded / plain |" if args.bench else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.bench else ""))
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
                print(f"| {name} | {layer} | {m} | not embeddable: {str(e)[:70]}... | | |" + (" |" if args.bench else ""))
                continue
            s = session(f)
            out, sal, raw = s.run(["output", "saliency", "saliency_raw"], {"input": x})
            e = ex.explain(x, m)
            flat = "" if e.degenerate is None or not np.any(e.degenerate) else " (degenerate map: rounding noise)"
            row = (f"| {name} | {layer} | {m} | {np.abs(out - ref).max():.1e} | {np.abs(sal - e.heatmap).max():.1e}{flat} | "
                   f"{np.abs(raw - e.raw).max() / (np.abs(e.raw).max() + 1e-30):.1e} |")
            if args.bench:
                ratio, t_plain = time_ratio(s, ps, x, args.reps)
                row += f" {ratio:.2f}x (plain {1000 * t_plain:.0f} ms) |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
