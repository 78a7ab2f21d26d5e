"""Audit demo: export the demo CNN to ONNX, write a folder of shape images (one corrupt), audit it.

    PYTHONPATH=. python scripts/onnx_audit_demo.py [OUT_DIR]

Writes OUT_DIR/demo.onnx, OUT_DIR/images/, OUT_DIR/audit/{report.html, metrics.csv, results.json}
and prints the wall time of a first run and of a resumed run (a small benchmark of the audit).
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    import torch
    from PIL import Image

    from agnostic_cam.cli import main as cli
    from agnostic_cam.demo.data import CLASSES, make_shapes
    from agnostic_cam.demo.torch_model import load_demo_net

    out.mkdir(parents=True, exist_ok=True)
    net = load_demo_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), str(out / "demo.onnx"), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    imgs = out / "images"
    imgs.mkdir(exist_ok=True)
    x, _, boxes = make_shapes(6, size=64, seed=7, layout="NHWC")
    for i in range(len(x)):
        Image.fromarray((x[i] * 255).astype(np.uint8)).save(imgs / f"shape{i}.png")
    (imgs / "corrupt.jpg").write_bytes(b"\xff\xd8\xff this is not a JPEG")
    (out / "boxes.json").write_text(json.dumps({f"shape{i}.png": boxes[i].tolist() for i in range(len(x))}))
    (out / "labels.txt").write_text("\n".join(CLASSES))
    args = ["audit", str(out / "demo.onnx"), str(imgs), "--out", str(out / "audit"), "--methods",
            "gradcam,scorecam,ablationcam,eigencam", "--boxes", str(out / "boxes.json"), "--labels",
            str(out / "labels.txt"), "--steps", "20"]
    for run in ("first run", "resumed run"):
        t = time.perf_counter()
        code = cli(args)
        print(f"{run}: exit code {code}, {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/onnx-audit"))
