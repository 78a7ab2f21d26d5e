"""The metric suite against Quantus 0.6.0 on the same work: ResNet-18 (torchvision, weights=None,
seeded), N seeded 224x224 images, Grad-CAM maps of layer4, top-1 targets, same machine, one process,
ours and Quantus alternating repetition by repetition (medians shown).

- faithfulness correlation: ``nr_runs`` random subsets of ``subset_size`` pixels, black baseline,
  logits. Quantus draws channel elements, we draw pixels (all channels), so the numbers differ
  by design; the time is for the same number of forward passes.
- max-sensitivity: ``nr_samples`` uniform-noise copies (radius 0.2), Grad-CAM of each copy: both sides
  explain with our explainer (Quantus's ``explain_func``) and get the *same* noise, so the scores
  are compared (max abs diff).
- IROF: SLIC superpixels (scikit-image, Quantus's call), baseline 0, softmax. Quantus 0.6.0's IROF
  asserts a (N, 1, H, W) mask equals the image's shape, so it runs on one-channel images only: this
  row uses ResNet-18 with a one-channel first convolution, for both sides; scores compared per image.

Quantus runs the torch model as its users do (its own batches); ours runs ONNX Runtime through the
explainer. Quantus 0.6.0 calls ``np.trapz`` (removed in NumPy 2.4): the script restores the alias.

    python scripts/benchmark_metrics.py --images 8 --repeat 2 --update-docs
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Metric suite against Quantus (scripts/benchmark_metrics.py, issue 27)"


def resnet(channels: int):
    import torch
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None)
    if channels == 1:
        m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return m.eval()


def setup(channels: int, n: int):
    from agnostic_cam import Explainer

    model = resnet(channels)
    ex = Explainer.from_torch(model, "layer4", input_shape=(channels, 224, 224), progress=False)
    x = np.random.default_rng(0).uniform(0, 1, (n, channels, 224, 224)).astype(np.float32)
    y = ex.predict(x).argmax(1)
    maps = ex.explain(x, "gradcam", target=list(y)).heatmap
    return model, ex, x, y, maps


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, np.asarray(out, np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100, help="faithfulness correlation: nr_runs")
    ap.add_argument("--samples", type=int, default=10, help="max-sensitivity: nr_samples (Quantus's default is 200)")
    ap.add_argument("--only", help="comma-separated rows to run: faithfulness, sensitivity, irof (default all)")
    ap.add_argument("--update-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6.0 needs the pre-NumPy-2.4 name
    import quantus
    import torch

    from agnostic_cam.evaluation import faithfulness, faithfulness_regions, robustness

    torch.set_num_threads(os.cpu_count() or 1)
    n, quiet = args.images, dict(disable_warnings=True, display_progressbar=False)
    model, ex, x, y, maps = setup(3, n)
    model1, ex1, x1, y1, maps1 = setup(1, n)
    seg = faithfulness_regions.slic_segments(x1)

    def explain_func(model, inputs, targets, **kw):
        return ex.explain(np.asarray(inputs, np.float32), "gradcam", target=[int(t) for t in targets]).heatmap[:, None]

    s = args.samples
    np.random.seed(0)
    noise = np.stack([np.random.uniform(-0.2, 0.2, size=(n, x[0].size)).reshape(x.shape) for _ in range(s)])

    def q(metric, m, xx, yy, a, **kw):
        return metric(model=m, x_batch=xx, y_batch=yy, a_batch=a[:, None], channel_first=True, device="cpu", **kw)

    def q_irof():  # one image per call: Quantus pads a batch's curves to its longest
        return np.concatenate([q(quantus.IROF(perturb_baseline=0.0, return_aggregate=False, normalise=False, **quiet),
                                 model1, x1[i:i + 1], y1[i:i + 1], maps1[i:i + 1]) for i in range(n)])

    def q_maxsens():
        np.random.seed(0)
        return q(quantus.MaxSensitivity(nr_samples=s, lower_bound=0.2, normalise=False, **quiet), model, x, y, maps,
                 explain_func=explain_func)

    rows = {
        "faithfulness correlation": (
            lambda: faithfulness.faithfulness_correlation(ex, x, maps, y, nr_runs=args.runs, subset_size=224, rng=0),
            lambda: q(quantus.FaithfulnessCorrelation(nr_runs=args.runs, subset_size=224, return_aggregate=False,
                                                      normalise=False, **quiet), model, x, y, maps),
            f"{args.runs} runs x 224 px", False),
        "max-sensitivity": (
            lambda: robustness.max_sensitivity(ex, x, maps, "gradcam", y, noise=noise),
            q_maxsens, f"{s} noisy copies, Grad-CAM", True),
        "IROF (1-channel ResNet-18)": (
            lambda: faithfulness_regions.irof(ex1, x1, maps1, y1, segments=seg, baseline=0.0),
            q_irof, f"SLIC, {int(np.mean([s_.max() + 1 for s_ in seg]))} segments/image", True),
    }
    table, ratios = [], {}
    keys = dict(zip(("faithfulness", "sensitivity", "irof"), rows))
    pick = [keys[k.strip()] for k in args.only.split(",")] if args.only else list(rows)
    for name, (ours, peer, what, compare) in ((k, rows[k]) for k in pick):
        to, tp, diff = [], [], None
        for r in range(args.repeat):
            pair = [("o", ours), ("p", peer)] if r % 2 == 0 else [("p", peer), ("o", ours)]
            for side, fn in pair:
                t, v = timed(fn)
                (to if side == "o" else tp).append(t)
                if side == "o":
                    vo = v
                else:
                    vp = v
            if compare:
                diff = float(np.max(np.abs(vo - vp)))
        a, b = float(np.median(to)), float(np.median(tp))
        ratios[name] = a / b
        table.append(f"| {name} | {n} | {what} | {a:.2f} | {b:.2f} | {a / b:.2f} | "
                     f"{'-' if diff is None else f'{diff:.1e}'} |")
        print(table[-1], flush=True)
    import onnxruntime

    head = [SECTION, "",
            f"ResNet-18 (weights=None, seeded), {n} images 224x224, Grad-CAM maps of layer4, top-1 targets; "
            f"median of {args.repeat} alternating repetition(s) in one process. *max abs diff*: the scores, where "
            "both sides get the same draws (faithfulness correlation draws pixels here, channel elements in "
            "Quantus: same cost, different numbers). Quantus 0.6.0's IROF runs on one-channel images only, so "
            "that row uses a one-channel first convolution on both sides. See scripts/benchmark_metrics.py.", "",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average (1 min) "
            f"at the end {os.getloadavg()[0]:.2f}. Versions: quantus {quantus.__version__}, torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}. Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "", "| metric | images | work | ours (s) | Quantus (s) | ours/Quantus | max abs diff |",
            "|---|---|---|---|---|---|---|", *table, "",
            "Goal <= 0.5x Quantus's time: " + "; ".join(
                f"{'met' if r <= 0.5 else 'not met'} for {k} ({r:.2f}x)" for k, r in ratios.items()) + ". "
            "Max-sensitivity explains every noisy copy with the same Grad-CAM on both sides (Quantus's "
            "`explain_func` is our explainer), so its time is mostly those explanations; ours explains the "
            "copies of several draws per call (`rows`, 64 copies) and resolves the targets once. Faithfulness "
            "correlation is nr_runs + 1 forward passes per image on both sides, so its ratio is bounded by ONNX "
            "Runtime's forward pass against torch's on this CPU (ResNet-18, batch 4, 224 px, quiet 2-core machine: "
            "8.3 ms per image on ONNX Runtime; Quantus's row is 14.7 ms per pass in torch, all included); ours runs them "
            "in batches of 64 at about 1.2x "
            "that floor. Under load the ratios move a lot (a run at load 13-19 gave 0.23x, 0.84x and 0.07x), so "
            "only quiet runs are recorded here.", ""]
    text = "\n".join(head)
    print(text)
    if args.update_docs:
        doc = ROOT / "docs" / "benchmarks.md"
        old = doc.read_text()
        pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
        new = pattern.sub(lambda _: text, old) if SECTION in old else old.rstrip("\n") + "\n\n" + text
        doc.write_text(new)


if __name__ == "__main__":
    main()
