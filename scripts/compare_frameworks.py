"""One CNN, three frameworks, one API: PyTorch, Keras and a bare ONNX file give the same maps.

    PYTHONPATH=. python scripts/compare_frameworks.py [--out out/compare] [--images 4]

Builds the demo CNN in PyTorch (``load_demo_net``) and its Keras twin with the same weights
(``keras_twin``), exports the PyTorch model to a plain ONNX file (``torch.onnx.export``; batch norms
kept as ``BatchNormalization`` nodes, not folded into the convolutions: FullGrad sums one term per
bias layer, so a folded file is a different decomposition with a different map), and runs
every method all three explainers support on the same images through ``agnostic_cam.compare``
(NCHW for PyTorch and ONNX, NHWC for Keras: it transposes per explainer). Prints, per method, the largest absolute difference between the final heatmaps of each
pair of frameworks and the time each took, and saves a side-by-side figure (one column per method
and framework). New methods appear here automatically once registered.
"""
from __future__ import annotations

import argparse
import io
import time
import warnings
from pathlib import Path

import numpy as np

FRAMEWORKS = ("torch", "keras", "onnx")
PAIRS = (("keras", "torch"), ("onnx", "torch"), ("keras", "onnx"))


def build_explainers(progress: bool = False) -> dict:
    """The three explainers of the demo CNN at its last ReLU, keyed by framework."""
    import torch  # before TensorFlow: torchvision imported after TF crashes some set-ups

    from agnostic_cam import Explainer
    from agnostic_cam.demo import keras_model, torch_model

    net = torch_model.load_demo_net()
    kmodel = keras_model.keras_twin(net)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), buf, dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return {
        "torch": Explainer.from_torch(net, torch_model.TARGET_LAYER, input_shape=(3, 64, 64), progress=progress),
        "keras": Explainer.from_keras(kmodel, keras_model.TARGET_LAYER, progress=progress),
        "onnx": Explainer.from_onnx(buf.getvalue(), progress=progress),  # picks the last ReLU before pooling
    }


def compare(n_images: int = 4, methods: list[str] | None = None, options: dict[str, dict] | None = None,
            explainers: dict | None = None, seed: int = 7) -> dict:
    """Every common method on all three frameworks, through ``agnostic_cam.compare``.

    methods: None = every method all three explainers support (``ex.methods``).
    options: per-method options, e.g. ``{"scorecam": {"batch_size": 64}}``.
    Returns {"comparison": the Comparison, "images": NCHW (N, 3, 64, 64), "labels", "layers", "setup":
    {framework: seconds of the first calls (export/conversion)}, "rows": [{"method", "diff": {pair: max
    abs heatmap difference}, "seconds": {framework: s}, "raw_rel"}], "explanations": {method:
    {framework: Explanation}}}.
    """
    from agnostic_cam import compare as compare_models
    from agnostic_cam.demo.data import make_shapes

    exs = explainers or build_explainers()
    images, labels, _ = make_shapes(n_images, seed=seed)  # NCHW in [0, 1]; compare() hands Keras NHWC
    setup = {}
    for fw, ex in exs.items():  # first calls export / convert the model: time them apart
        x = images[:1] if ex.adapter.layout == "NCHW" else images[:1].transpose(0, 2, 3, 1)
        t = time.perf_counter()
        ex.predict(x)
        if "gradcam" in ex.methods:
            ex.explain(x, "gradcam")
        setup[fw] = time.perf_counter() - t
    res = compare_models({fw: exs[fw] for fw in FRAMEWORKS}, images, methods, targets=labels, options=options)
    rows = [{"method": m, "diff": {f"{a}-{b}": res.pair(m, a, b)["max_diff"] for a, b in PAIRS},
             "seconds": res.seconds[m], "raw_rel": raw_differences(res.explanations[m])} for m in res.methods]
    return {"comparison": res, "images": images, "labels": labels, "rows": rows, "explanations": res.explanations,
            "setup": setup, "layers": res.layers}


def raw_differences(res: dict) -> dict | None:
    """Pixel-space methods (raw (N, C, H, W), channel-first in every framework): max |raw_a - raw_b|
    relative to max |raw_b| per pair of frameworks; None for layer maps."""
    if any(e.raw.ndim != 4 for e in res.values()):
        return None
    return {f"{a}-{b}": float(np.abs(res[a].raw - res[b].raw).max() / (np.abs(res[b].raw).max() + 1e-30))
            for a, b in PAIRS}


def table(result: dict) -> str:
    """The comparison as a fixed-width text table."""
    head = f"{'method':<16}" + "".join(f"{p:>13}" for p in (f"{a}-{b}" for a, b in PAIRS)) + "".join(
        f"{fw + ' s':>10}" for fw in FRAMEWORKS)
    lines = [f"max |heatmap difference| per pair of frameworks, and seconds per call (layers: {result['layers']})",
             head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(f"{r['method']:<16}" + "".join(f"{v:>13.2e}" for v in r["diff"].values())
                     + "".join(f"{r['seconds'][fw]:>10.3f}" for fw in FRAMEWORKS))
    lines.append(f"{'(first call)':<16}" + " " * 13 * len(PAIRS)
                 + "".join(f"{result['setup'][fw]:>10.3f}" for fw in FRAMEWORKS))
    pixel = [r for r in result["rows"] if r.get("raw_rel")]
    if pixel:
        lines += ["", "pixel-space methods: max relative difference of the signed attributions (raw)"]
        lines += [f"{r['method']:<16}" + "".join(f"{v:>13.2e}" for v in r["raw_rel"].values()) for r in pixel]
    return "\n".join(lines)


def save_figure(result: dict, path: str | Path, n_images: int = 2) -> Path:
    """The comparison's figure: one row per method; per image (worst-agreeing first) torch | keras | onnx."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result["comparison"].figure(n_images).savefig(path, dpi=80)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/compare", help="folder for the figure (default out/compare)")
    p.add_argument("--images", type=int, default=4, help="number of demo images (default 4)")
    args = p.parse_args(argv)
    result = compare(args.images)
    print(table(result))
    worst = max(max(r["diff"].values()) for r in result["rows"])
    print(f"\nlargest difference over all methods: {worst:.2e}")
    print(f"figure: {save_figure(result, Path(args.out) / 'compare_frameworks.png')}")
    return result


if __name__ == "__main__":
    main()
