"""Rendering: colormaps, overlays and comparison figures. matplotlib is imported lazily."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from agnostic_cam.errors import InputError, OptionError

from agnostic_cam.targets.dispatch import to_numpy
def to_display(images: Any) -> np.ndarray:
    """Images for display as (N, H, W, 3) float in [0, 1].

    Accepts (N, H, W, C) or (N, C, H, W) with 1 or 3 channels (also a single image without the
    batch axis), uint8 in [0, 255] or float. Floats outside [0, 1] (e.g. mean/std normalised) are
    min-max scaled per image.
    """
    x = to_numpy(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise InputError(f"images must be (N, H, W, C) or (N, C, H, W); got shape {x.shape}")
    if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    if x.shape[-1] not in (1, 3):
        raise InputError(f"images must have 1 or 3 channels; got shape {x.shape}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    else:
        x = x.astype(np.float32)
        if x.min() < 0 or x.max() > 1:
            lo = x.min(axis=(1, 2, 3), keepdims=True)
            x = (x - lo) / (x.max(axis=(1, 2, 3), keepdims=True) - lo + 1e-12)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """(N, H, W) values in [0, 1] -> (N, H, W, 3) float RGB in [0, 1] through a matplotlib colormap."""
    from matplotlib import colormaps

    return colormaps[colormap](np.clip(heatmap, 0, 1))[..., :3].astype(np.float32)


def overlay(images: Any, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a colourised heatmap (N, H, W) over images: (N, H, W, 3) uint8 RGB.

    ``out = (1 - alpha) * image + alpha * colormap(heatmap)``. Images of another size than the
    heatmap are an error (resize them first, or explain at their size).
    """
    if not 0 <= alpha <= 1:
        raise OptionError(f"alpha must be in [0, 1]; got {alpha}")
    img = to_display(images)
    heat = np.asarray(heatmap)
    if heat.ndim == 2:
        heat = heat[None]
    if img.shape[:3] != heat.shape:
        raise InputError(f"images {img.shape[:3]} and heatmaps {heat.shape} differ in batch size or (H, W)")
    blend = (1 - alpha) * img + alpha * colorize(heat, colormap)
    return np.clip(np.round(blend * 255), 0, 255).astype(np.uint8)


# Figure text in points; saved at FIGURE_DPI and shown at natural size that is >= 12 px on screen.
FIGURE_DPI = 100
FONT = 9.5
WRONG = "#c62828"


def add_colorbar(fig, axes, colormap: str = "jet", label: str = "relevance (0 = none, 1 = most)") -> None:
    """A horizontal colour bar for heatmaps in [0, 1] under ``axes`` (a figure with layout='constrained')."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    sm = ScalarMappable(norm=Normalize(0, 1), cmap=colormap)
    cb = fig.colorbar(sm, ax=list(np.ravel(axes)), orientation="horizontal", fraction=0.04, aspect=40, pad=0.02)
    cb.set_label(label, fontsize=FONT)
    cb.ax.tick_params(labelsize=FONT)


def mark_wrong(ax, text: str = "wrong") -> None:
    """A red frame and a red note on an axis: the model's prediction is wrong for this row."""
    for sp in ax.spines.values():
        sp.set_visible(True)
        sp.set_edgecolor(WRONG)
        sp.set_linewidth(3)
    ax.text(0.02, 0.98, f"\u2717 {text}", transform=ax.transAxes, va="top", ha="left", fontsize=FONT,
            color="white", fontweight="bold", bbox={"facecolor": WRONG, "edgecolor": "none", "pad": 1.5})


def compare_figure(images: Any, explanations: Mapping[str, Any] | Sequence[Any], alpha: float = 0.5,
                   colormap: str = "jet", titles: Sequence[str] | None = None, cell: float | None = None,
                   wrong: Sequence[bool] | None = None, colorbar: bool = True):
    """A matplotlib Figure: one row per image; columns: the image, then each method's overlay.

    ``explanations``: a mapping name -> Explanation, or a sequence of Explanations (named by
    their method). ``cell``: inches per image (default: fit the page). ``titles``: a label per row (left of the image). ``wrong``: rows whose
    prediction is wrong get a red frame and mark. ``colorbar``: the heatmap scale under the grid.
    Text is sized for the figure saved at :data:`FIGURE_DPI` and shown at its natural size.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if not isinstance(explanations, Mapping):
        explanations = {e.method: e for e in explanations}
    img = to_display(images)
    n, cols = img.shape[0], 1 + len(explanations)
    cell = cell or min(1.6, 11.4 / cols)  # up to ten columns fit a 1250 px page at FIGURE_DPI
    fig = Figure(figsize=(cell * cols + (0.9 if titles is not None else 0), cell * n + (0.9 if colorbar else 0.35)),
                 layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(img[i])
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=FONT, rotation=0, ha="right", va="center", labelpad=6)
        for j, (name, e) in enumerate(explanations.items(), start=1):
            axes[i, j].imshow(overlay(img[i:i + 1], e.heatmap[i:i + 1], alpha, colormap)[0])
            if i == 0:
                axes[i, j].set_title(name, fontsize=FONT)
        if wrong is not None and wrong[i]:
            mark_wrong(axes[i, 0])
    axes[0, 0].set_title("image", fontsize=FONT)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if colorbar:
        add_colorbar(fig, axes, colormap)
    return fig


def save_png(array: np.ndarray, path) -> None:
    """Save an (H, W, 3) uint8 array as PNG."""
    from PIL import Image

    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
