"""The demo job: one HTML page with a section per family of methods."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agnostic_cam.demo.data import CLASSES, make_shapes
from agnostic_cam.demo.frameworks import frameworks_section
from agnostic_cam.demo.features_section import features_section
from agnostic_cam.demo.gradients_section import gradients_section
from agnostic_cam.demo.page import Figure, Section, missing_modules, row_labels, timing_table, write_page
from agnostic_cam.errors import InputError, MissingDependencyError

log = logging.getLogger(__name__)


def cam_section(out_dir: Path, model, images: np.ndarray, labels: np.ndarray) -> Section:
    """Every CAM method of the core on the demo model: one grid PNG and a timing table."""
    from agnostic_cam import Explainer
    from agnostic_cam.demo.torch_model import TARGET_LAYER
    from agnostic_cam.render.figures import FIGURE_DPI, compare_figure

    ex = Explainer.from_torch(model, TARGET_LAYER, input_shape=images.shape[1:], progress=False)
    exps, rows = {}, []
    for name in ("cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam"):
        t = time.perf_counter()
        exps[name] = ex.explain(images, name, target=None)
        rows.append((name, time.perf_counter() - t))
    titles, wrong = row_labels(CLASSES, labels, exps["gradcam"].targets)
    compare_figure(images, exps, titles=titles, wrong=wrong).savefig(out_dir / "cam_methods.png", dpi=FIGURE_DPI)
    return Section("cams", "Class activation maps",
                   f"Target layer `{TARGET_LAYER}`, the predicted (top-1) class of each image. Rows: images; "
                   "columns: methods.", [Figure("cam_methods.png", "Every CAM method on the same images.")],
                   timing_table(rows, f"method ({len(images)} images)"))


def demo_images(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``n`` held-out demo images (NCHW), cycling through the classes so each one shows."""
    pool, labels, _ = make_shapes(max(8 * n, 32), seed=seed)
    order = [np.flatnonzero(labels == c) for c in range(len(CLASSES))]
    pick = [order[i % len(CLASSES)][i // len(CLASSES)] for i in range(n)]
    return pool[pick], labels[pick]


SECTIONS: dict[str, Callable[..., Section]] = {"cams": cam_section}
SECTIONS["gradients"] = gradients_section
SECTIONS["features"] = features_section
SECTIONS["keras"] = frameworks_section
NEEDS: dict[str, tuple[str, ...]] = {"keras": ("tensorflow", "keras", "tf2onnx")}  # beyond torch


def run_demo(out: Path, n_images: int = 6, sections: list[str] | None = None) -> Path:
    """Build the demo into ``out``; returns the path of ``index.html``. Sections whose framework is not
    installed are skipped, and the page and the log say which."""
    if missing_modules(("torch", "torchvision")):
        raise MissingDependencyError("the demo trains and explains a PyTorch model: pip install 'agnostic-cam[torch]'")
    from agnostic_cam.demo.torch_model import accuracy, load_demo_net

    for name in sections or []:
        if name not in SECTIONS:
            raise InputError(f"unknown demo section {name!r}; known: {', '.join(SECTIONS)}")
    out.mkdir(parents=True, exist_ok=True)
    log.info("loading the demo model (trained on synthetic shapes on first use, then cached)")
    model = load_demo_net(verbose=True)
    images, labels = demo_images(n_images)
    intro = (f"Demo CNN (3 conv blocks + GAP + linear) trained on synthetic shapes {', '.join(CLASSES)}; held-out "
             f"accuracy {accuracy(model):.0%}.")
    done, skipped = [], []
    for name in sections or list(SECTIONS):
        missing = missing_modules(NEEDS.get(name, ()))
        if missing:
            why = f"needs {', '.join(missing)}: pip install 'agnostic-cam[{name}]'"
            log.warning("  section %s skipped: %s", name, why)
            skipped.append((name, why))
            continue
        t = time.perf_counter()
        done.append(SECTIONS[name](out, model, images, labels))
        log.info("  section %s: %.1f s", name, time.perf_counter() - t)
    return write_page(out, intro, done, skipped)
