"""Screenshots of the demo page and an audit report in headless Chromium (run by hand).

    python scripts/screenshots.py --out out/screenshots            # builds both, then screenshots
    python scripts/screenshots.py --demo out/demo --out out/shots  # reuse a built demo

Needs Debian's Chromium (``apt-get install chromium``); nothing is downloaded. Writes
``demo.png`` (the page top: the CAM grid with its colour bar, row labels and wrong-prediction marks),
``demo_keras.png`` (the Keras grid), ``report.png`` and ``report_images.png`` (the audit report's
summary and per-image rows). Look at them: tests/test_pages.py checks the HTML's structure, not
what a reader sees.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger("screenshots")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: apt-get install chromium")


def shoot(html: Path, png: Path, width: int = 1400, height: int = 1800, only: str = "") -> Path:
    """One screenshot of ``html`` at width x height CSS pixels; ``only``: show just the page's
    ``<section id=only>`` (a styled copy of the page beside it, removed afterwards)."""
    if only:
        page = html.read_text(encoding="utf-8").replace(
            "</style>", f"section:not(#{only}){{display:none}}</style>", 1)
        copy = html.with_name(f"_screenshot_{only}.html")
        copy.write_text(page, encoding="utf-8")
        try:
            return shoot(copy, png, width, height)
        finally:
            copy.unlink()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={png}",
               "--virtual-time-budget=3000", html.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not png.is_file():
        sys.exit(f"Chromium wrote no screenshot of {html}")
    log.info("wrote %s", png)
    return png


def build_audit(out: Path) -> Path:
    """An audit of the demo CNN (exported to ONNX) on a folder tree of demo images of several sizes and
    aspect ratios, with class names; returns report.html."""
    import torch
    from PIL import Image

    from agnostic_cam.cli import main
    from agnostic_cam.demo.data import CLASSES, make_shapes
    from agnostic_cam.demo.torch_model import load_demo_net

    model_path = out / "demo_net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(load_demo_net(), (torch.zeros(1, 3, 64, 64),), str(model_path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    images = out / "images"
    x, labels, _ = make_shapes(6, size=96, seed=11, layout="NHWC")
    for i in range(len(x)):
        rgb = (x[i] * 255).astype(np.uint8)
        if i % 3 == 1:
            rgb = rgb[8:88]                      # wide: 96 x 80 -> shown wide, not squashed
        elif i % 3 == 2:
            rgb = np.ascontiguousarray(rgb[:, 16:80])  # tall
        folder = images / CLASSES[(labels[i] + (1 if i == 4 else 0)) % len(CLASSES)]  # one mislabelled image
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / f"shape{i}.png")
    (out / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    rc = main(["audit", str(model_path), str(images), "--out", str(out / "audit"), "--methods",
               "gradcam,scorecam,eigencam", "--steps", "8", "--labels", str(out / "labels.txt"), "--no-progress",
               "--size", "64,64"])
    if rc != 0:
        sys.exit(f"the audit failed (exit {rc})")
    return out / "audit" / "report.html"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/screenshots"))
    p.add_argument("--demo", type=Path, help="a built demo folder (default: build one with 4 images)")
    p.add_argument("--report", type=Path, help="an audit report.html (default: audit the demo CNN)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a.out.mkdir(parents=True, exist_ok=True)
    demo = a.demo
    if demo is None:
        from agnostic_cam.demo.run import run_demo

        demo = run_demo(a.out / "demo", n_images=4).parent
    report = a.report or build_audit(a.out)
    shoot(demo / "index.html", a.out / "demo.png")
    if (demo / "keras_twin.png").exists():
        shoot(demo / "index.html", a.out / "demo_keras.png", height=1000, only="keras")
    shoot(report, a.out / "report.png", height=1400)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
