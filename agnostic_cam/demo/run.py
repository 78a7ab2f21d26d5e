"""The demo job: one HTML page with a section per family of methods."""
from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agnostic_cam.demo.data import CLASSES, make_shapes
from agnostic_cam.demo.frameworks import frameworks_section
from agnostic_cam.demo.features_section import features_section
from agnostic_cam.demo.gradients_section import gradients_section
from agnostic_cam.errors import InputError

log = logging.getLogger(__name__)


def cam_section(out_dir: Path, model, images: np.ndarray, labels: np.ndarray) -> str:
    """Every CAM method of the core on the demo model: one grid PNG and a timing table."""
    from agnostic_cam import Explainer
    from agnostic_cam.demo.torch_model import TARGET_LAYER
    from agnostic_cam.viz import compare_figure

    ex = Explainer.from_torch(model, TARGET_LAYER, input_shape=images.shape[1:], progress=False)
    exps, rows = {}, []
    for name in ("cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam"):
        t = time.perf_counter()
        exps[name] = ex.explain(images, name, target=None)
        rows.append((name, time.perf_counter() - t))
    preds = exps["gradcam"].targets
    titles = [f"true {CLASSES[y]}\npred {CLASSES[p]}" for y, p in zip(labels, preds)]
    fig = compare_figure(images, exps, titles=titles)
    fig.savefig(out_dir / "cam_methods.png", dpi=90)
    table = "".join(f"<tr><td>{html.escape(n)}</td><td>{s * 1000:.0f} ms</td></tr>" for n, s in rows)
    return ("<h2>Class activation maps</h2><p>Target layer <code>" + TARGET_LAYER + "</code>, top-1 class. "
            "Rows: images; columns: methods.</p><img src='cam_methods.png' style='max-width:100%'>"
            f"<table><tr><th>method</th><th>time ({len(images)} images)</th></tr>{table}</table>")


def demo_images(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``n`` held-out demo images (NCHW), cycling through the classes so each one shows."""
    pool, labels, _ = make_shapes(max(8 * n, 32), seed=seed)
    order = [np.flatnonzero(labels == c) for c in range(len(CLASSES))]
    pick = [order[i % len(CLASSES)][i // len(CLASSES)] for i in range(n)]
    return pool[pick], labels[pick]


SECTIONS: dict[str, Callable[..., str]] = {"cams": cam_section}
SECTIONS["gradients"] = gradients_section
SECTIONS["features"] = features_section
SECTIONS["keras"] = frameworks_section


def run_demo(out: Path, n_images: int = 6, sections: list[str] | None = None) -> Path:
    """Build the demo into ``out``; returns the path of ``index.html``."""
    from agnostic_cam.demo.torch_model import accuracy, load_demo_net

    out.mkdir(parents=True, exist_ok=True)
    log.info("loading the demo model (trained on synthetic shapes on first use, then cached)")
    model = load_demo_net(verbose=True)
    images, labels = demo_images(n_images)
    parts = [f"<p>Demo CNN (3 conv blocks + GAP + linear) trained on synthetic shapes {list(CLASSES)}; "
             f"held-out accuracy {accuracy(model):.0%}.</p>"]
    for name in sections or list(SECTIONS):
        if name not in SECTIONS:
            raise InputError(f"unknown demo section {name!r}; known: {', '.join(SECTIONS)}")
        t = time.perf_counter()
        parts.append(SECTIONS[name](out, model, images, labels))
        log.info("  section %s: %.1f s", name, time.perf_counter() - t)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>agnostic-cam demo</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}td,th{padding:2px 10px}</style>"
            "</head><body><h1>agnostic-cam demo</h1>" + "\n".join(parts) + "</body></html>")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
