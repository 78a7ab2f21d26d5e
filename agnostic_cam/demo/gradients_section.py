"""Demo section: every pixel-space gradient method on the demo model, one figure per method.

Each figure has one row per image and the renderings the classic CNN-visualisation collections
show: the image, the colour gradient image, the grayscale saliency image, the positive and
negative parts, and the heatmap overlay.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from agnostic_cam.demo.page import Figure, Section, row_labels, timing_table

# (method, options, caption)
GALLERY: tuple[tuple[str, dict, str], ...] = (
    ("saliency", {}, "vanilla gradient (Simonyan et al. 2014)"),
    ("guided_backprop", {}, "guided backpropagation (Springenberg et al. 2015)"),
    ("deconvnet", {}, "deconvnet (Zeiler & Fergus 2014)"),
    ("gradient_x_input", {}, "gradient x input"),
    ("integrated_gradients", {"steps": 32}, "integrated gradients, zero baseline, 32 Gauss-Legendre steps"),
    ("smoothgrad", {"base": "saliency", "noise": 0.15, "samples": 25}, "SmoothGrad over saliency, 15% noise, 25 samples"),
    ("guided_gradcam", {}, "guided backprop x Grad-CAM"),
    ("guided_gradcam++", {}, "guided backprop x Grad-CAM++"),
    ("guided_scorecam", {}, "guided backprop x Score-CAM"),
    ("guided_layercam", {}, "guided backprop x Layer-CAM"),
)


def method_figure(images: np.ndarray, exp, titles: list[str], wrong: list[bool] | None = None):
    """A matplotlib Figure: rows = images; columns = image and the renderings of ``exp``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from agnostic_cam.render.figures import FONT, add_colorbar, mark_wrong, to_display

    img = to_display(images)
    cols = [("image", img), ("gradient", exp.gradient_image()), ("saliency", exp.saliency_image()),
            ("positive", exp.gradient_image("positive")), ("negative", exp.gradient_image("negative")),
            ("overlay", exp.overlay(img))]
    n = img.shape[0]
    fig = Figure(figsize=(1.5 * len(cols) + 0.9, 1.5 * n + 1.2), layout="constrained")
    axes = fig.subplots(n, len(cols), squeeze=False)
    for j, (name, arr) in enumerate(cols):
        for i in range(n):
            axes[i, j].imshow(arr[i], cmap="gray" if arr.ndim == 3 else None, vmin=0, vmax=255 if arr.dtype == np.uint8 else 1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(name, fontsize=FONT)
    for i in range(n):
        axes[i, 0].set_ylabel(titles[i], fontsize=FONT, rotation=0, ha="right", va="center", labelpad=6)
        if wrong is not None and wrong[i]:
            mark_wrong(axes[i, 0])
    fig.suptitle(exp.method, fontsize=FONT + 1)
    add_colorbar(fig, axes, label="overlay: relevance (0 = none, 1 = most)")
    return fig


def gradients_section(out_dir: Path, model, images: np.ndarray, labels: np.ndarray, n_show: int = 4) -> Section:
    """One PNG per pixel-space method (``gradients_<method>.png``) and a timing table."""
    from agnostic_cam import Explainer
    from agnostic_cam.demo.data import CLASSES
    from agnostic_cam.demo.torch_model import TARGET_LAYER
    from agnostic_cam.render.figures import FIGURE_DPI

    ex = Explainer.from_torch(model, TARGET_LAYER, input_shape=images.shape[1:], progress=False)
    shown = images[:n_show]
    figures, rows = [], []
    for name, opts, caption in GALLERY:
        t = time.perf_counter()
        exp = ex.explain(images, name, target=None, **opts)
        rows.append((name, time.perf_counter() - t))
        titles, wrong = row_labels(CLASSES, labels[:n_show], exp.targets[:n_show])
        sub = type(exp)(exp.heatmap[:n_show], exp.raw[:n_show], exp.targets[:n_show], exp.scores[:n_show],
                        exp.method, exp.layer)
        fname = f"gradients_{name.replace('+', 'p')}.png"
        method_figure(shown, sub, titles, wrong).savefig(out_dir / fname, dpi=FIGURE_DPI)
        figures.append(Figure(fname, caption, heading=name))
    return Section("gradients", "Pixel-space gradient methods",
                   "Top-1 class. Columns: image, colour gradient (per-image min-max), grayscale saliency (sum of "
                   "|attribution| over channels, clipped at the 99th percentile), positive and negative parts, "
                   "heatmap overlay.", figures, timing_table(rows, f"method ({len(images)} images)"))
