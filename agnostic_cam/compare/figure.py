"""Pictures of a comparison: the figure (methods x models, worst-agreeing images first) and the
per-image strip PNGs the ``compare`` command's report shows. matplotlib is imported lazily."""
from __future__ import annotations

import numpy as np

from agnostic_cam.render.figures import FONT, add_colorbar, overlay, to_display


def comparison_figure(result, n_images: int = 4):
    """One row per method; per image (the worst-agreeing first, at most ``n_images``) one column per
    model, titled with the image's name, the model and its mean |difference| to the first model."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    img = to_display(result.images)
    picks = result.worst_images(max(1, int(n_images)))
    names, methods = result.names, result.methods
    cols = len(picks) * len(names)
    cell = min(1.6, 13.0 / cols)
    fig = Figure(figsize=(cell * cols + 0.9, cell * len(methods) + 1.6), layout="constrained")
    axes = fig.subplots(len(methods), cols, squeeze=False)
    for r, m in enumerate(methods):
        for j, i in enumerate(picks):
            for k, name in enumerate(names):
                ax = axes[r, j * len(names) + k]
                ax.imshow(overlay(img[i:i + 1], result.heatmaps[m][name][i:i + 1])[0])
                ax.set_xticks([])
                ax.set_yticks([])
                if k:
                    d = float(np.abs(result.heatmaps[m][name][i] - result.heatmaps[m][names[0]][i]).mean())
                    ax.set_xlabel(f"Δ {d:.3f}", fontsize=FONT - 2)
                if r == 0:
                    ax.set_title(f"{result.image_names[i][:18]}: {name}", fontsize=FONT - 2)
        axes[r, 0].set_ylabel(m, fontsize=FONT)
    add_colorbar(fig, axes)
    return fig


def image_strip(display: np.ndarray, heatmaps: dict, methods: list[str], names: list[str]) -> np.ndarray:
    """One image's (H, W, 3) uint8 strip: a row per method, the image then each model's overlay."""
    img = to_display(display[None])
    gap = np.full((img.shape[1], 4, 3), 255, np.uint8)
    rows = []
    for m in methods:
        cells = [(img[0] * 255).round().astype(np.uint8)]
        for k in names:
            cells += [gap, overlay(img, heatmaps[m][k][None])[0]]
        rows.append(np.concatenate(cells, axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)
