"""Score-CAM / Ablation-CAM on int8 ONNX graphs vs the float graph they were quantized from.

    python scripts/benchmark_int8.py [--size 224] [--repeat 3] [--update-docs]

ResNet-18 (torchvision, random seeded weights) exported with the legacy exporter (opset 17, dynamic
batch), then quantized with ONNX Runtime: dynamic (``quantize_dynamic``: ConvInteger) and static QDQ
(``quantize_static``, 4 random calibration images). Each file is explained with ``from_onnx`` on the
same image; files alternate within each repetition and the table shows medians. *per pass*: the
call's time divided by the number of forward passes it runs (Score-CAM: one per distinct masked
input; Ablation-CAM: one tail pass per channel). Session set-up and export are not timed.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
MARK_BEGIN, MARK_END = "<!-- int8-benchmark:begin -->", "<!-- int8-benchmark:end -->"


def export_files(size: int, root: str) -> dict[str, str]:
    import torch
    import torchvision
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    paths = {k: os.path.join(root, f"{k}.onnx") for k in ("float32", "int8 dynamic", "int8 QDQ")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), paths["float32"], dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})

    class Calibration(CalibrationDataReader):
        def __init__(self):
            rs = np.random.RandomState(1)
            self.it = iter([{"input": rs.randn(1, 3, size, size).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    logging.disable(logging.WARNING)
    quantize_dynamic(paths["float32"], paths["int8 dynamic"])
    quantize_static(paths["float32"], paths["int8 QDQ"], Calibration(), quant_format=QuantFormat.QDQ)
    logging.disable(logging.NOTSET)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--methods", default="scorecam,ablationcam")
    ap.add_argument("--update-docs", action="store_true")
    args = ap.parse_args()
    from agnostic_cam import Explainer

    x = np.random.RandomState(0).randn(1, 3, args.size, args.size).astype(np.float32)
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as root:
        paths = export_files(args.size, root)
        exs = {k: Explainer.from_onnx(p, gradients=False) for k, p in paths.items()}
        passes = {"scorecam": 512, "ablationcam": 512}  # layer4 of ResNet-18 has 512 channels
        times: dict[tuple[str, str], list[float]] = {}
        for k, ex in exs.items():  # warm-up: sessions, tails
            for m in methods:
                ex.explain(x, m, target=0)
        for _ in range(args.repeat):
            for m in methods:
                for k, ex in exs.items():
                    t = time.perf_counter()
                    ex.explain(x, m, target=0)
                    times.setdefault((k, m), []).append(time.perf_counter() - t)
    load = os.getloadavg()[0]
    rows = ["| graph | method | time (s) | per pass (ms) | vs float32 |", "|---|---|---|---|---|"]
    for m in methods:
        base = statistics.median(times[("float32", m)])
        for k in paths:
            med = statistics.median(times[(k, m)])
            rows.append(f"| {k} | {m} | {med:.2f} | {1000 * med / passes[m]:.2f} | {med / base:.2f}x |")
    table = "\n".join(rows)
    note = (f"ResNet-18, {args.size}x{args.size}, batch 1, target layer `layer4` (512 channels), medians of "
            f"{args.repeat} alternating repetitions, {os.cpu_count()} CPU cores, load average {load:.1f} at the end.")
    print(note + "\n\n" + table)
    if args.update_docs:
        from docs_section import update_section

        update_section(MARK_BEGIN, MARK_END, "int8 graphs: Score-CAM and Ablation-CAM", "benchmark_int8.py", note, table)


if __name__ == "__main__":
    main()
