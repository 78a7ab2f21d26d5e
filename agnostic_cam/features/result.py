"""Result types of the feature visualisations, each with a ``figure()`` (matplotlib, imported lazily)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from agnostic_cam.errors import InputError

from agnostic_cam.core import layout as L
def to_hwc(images: np.ndarray, layout: str) -> np.ndarray:
    """(M, ...) in ``layout`` -> (M, H, W, C)."""
    return L.from_chw(L.to_chw(np.asarray(images), layout), L.NHWC)


def stretch(images: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> np.ndarray:
    """Per-image contrast stretch of (M, ...) to [0, 1] between the ``lo`` and ``hi`` percentiles."""
    x = np.asarray(images, dtype=np.float64)
    flat = x.reshape(x.shape[0], -1)
    a = np.percentile(flat, lo, axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    b = np.percentile(flat, hi, axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    return np.clip((x - a) / np.maximum(b - a, 1e-12), 0, 1).astype(np.float32)


def grid_figure(panels: list[np.ndarray], titles: list[str], cols: int | None = None, suptitle: str = "",
                cell: float = 1.6, cmap: str = "gray"):
    """A matplotlib Figure showing ``panels`` ((H, W) or (H, W, 3) arrays in [0, 1]) on a grid."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = len(panels)
    cols = min(n, cols or int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(cell * cols, cell * rows + (0.35 if suptitle else 0) + 0.1))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        p = panels[i]
        ax.imshow(p, cmap=None if p.ndim == 3 else cmap, vmin=0, vmax=1, interpolation="nearest")
        if titles:
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def _rgb(img_hwc: np.ndarray) -> np.ndarray:
    return img_hwc if img_hwc.shape[-1] == 3 else img_hwc.mean(axis=-1)


@dataclass
class Visualisation:
    """Synthesised or reconstructed images.

    images: (M, ...) float32 in the model's input ``layout``. labels: one caption per image.
    title: the figure's title. layer: the layer involved (None: the output).
    history: (steps, M) the objective per step (class score, channel mean, ``0.5||A||^2`` or the
    relative representation distance), or None. source: the input image(s) it started from or
    explains (shown first in the figure), or None. meta: method-specific numbers.
    """

    kind: str
    images: np.ndarray
    layout: str
    labels: list[str]
    title: str
    layer: str | None = None
    history: np.ndarray | None = None
    source: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return f"Visualisation(kind={self.kind!r}, layer={self.layer!r}, images={self.images.shape})"

    def display(self) -> np.ndarray:
        """(M, H, W, C) float32 in [0, 1] for viewing: deconvnet projections on a symmetric scale
        (mid-grey = 0, each image divided by its largest magnitude), others contrast-stretched."""
        x = to_hwc(self.images, self.layout)
        if self.kind == "deconv":
            m = np.abs(x).reshape(x.shape[0], -1).max(axis=1).reshape(-1, 1, 1, 1)
            return (0.5 + 0.5 * x / np.maximum(m, 1e-12)).astype(np.float32)
        return stretch(x)

    def figure(self, cols: int | None = None, cell: float = 1.6, crop: bool = True):
        """The images on a grid after the source image(s). Deconvnet projections are cropped (with
        the source) to the box where any of them is non-zero, the receptive field, unless ``crop=False``."""
        disp = self.display()
        src = None if self.source is None else stretch(to_hwc(self.source, self.layout), 0, 100)
        if crop and self.kind == "deconv":
            nz = np.abs(to_hwc(self.images, self.layout)).max(axis=(0, 3))
            ys, xs = np.nonzero(nz > 1e-6 * max(float(nz.max()), 1e-30))
            if ys.size:
                box = (slice(max(ys.min() - 2, 0), ys.max() + 3), slice(max(xs.min() - 2, 0), xs.max() + 3))
                disp = disp[:, box[0], box[1]]
                src = None if src is None else src[:, box[0], box[1]]
        panels = [_rgb(p) for p in disp]
        titles = list(self.labels)
        if src is not None:
            panels = [_rgb(p) for p in src] + panels
            titles = ["input"] * len(src) + titles
        return grid_figure(panels, titles, cols or (len(panels) if len(panels) <= 8 else None), self.title, cell)

    def save(self, path: str | Path) -> Path:
        """Save the figure (``.png``) or the arrays (``.npz``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            self.figure().savefig(path, dpi=90)
        elif path.suffix.lower() == ".npz":
            np.savez_compressed(path, images=self.images, history=np.array([]) if self.history is None else self.history)
        else:
            raise InputError(f"unsupported file type {path.suffix!r}: use .png (figure) or .npz (arrays)")
        return path


@dataclass
class FeatureMaps:
    """Activations of ``layer`` for a batch: ``maps`` (N, k, h, w) channel-first, the ``channels``
    (k,) shown (ranked by mean activation over the batch unless chosen) and ``means`` (N, k)."""

    maps: np.ndarray
    channels: np.ndarray
    means: np.ndarray
    layer: str

    def __repr__(self) -> str:
        return f"FeatureMaps(layer={self.layer!r}, maps={self.maps.shape}, channels={self.channels.tolist()})"

    def figure(self, image: int = 0, cols: int | None = None, cell: float = 1.3, cmap: str = "viridis"):
        """The maps of one image on a grid, one shared colour scale (min-max over the maps shown)."""
        if not 0 <= image < self.maps.shape[0]:
            raise InputError(f"image must be in [0, {self.maps.shape[0]}); got {image}")
        m = self.maps[image].astype(np.float64)
        m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
        titles = [f"ch {c}: {v:.2g}" for c, v in zip(self.channels, self.means[image])]
        return grid_figure(list(m), titles, cols, f"{self.layer}: feature maps", cell, cmap)


@dataclass
class Filters:
    """The kernel of a convolution ``weights`` (O, I, kh, kw) float32."""

    weights: np.ndarray
    layer: str

    def __repr__(self) -> str:
        return f"Filters(layer={self.layer!r}, weights={self.weights.shape})"

    def figure(self, max_filters: int = 64, max_inputs: int = 8, cell: float = 0.7):
        """Filters with 3 input channels as colour images (each min-max scaled, as for a first
        layer); otherwise one grey panel per (output, input) pair, one row per output filter,
        on one symmetric scale (mid-grey = 0)."""
        w = self.weights[:max_filters].astype(np.float64)
        o, i = w.shape[:2]
        if i == 3:
            rgb = L.from_chw(w, L.NHWC)
            lo = rgb.min(axis=(1, 2, 3), keepdims=True)
            rgb = (rgb - lo) / np.maximum(rgb.max(axis=(1, 2, 3), keepdims=True) - lo, 1e-12)
            return grid_figure(list(rgb), [str(k) for k in range(o)], None, f"{self.layer}: {o} filters (RGB)", cell * 1.3)
        w = w[:, :max_inputs]
        i = w.shape[1]
        scale = max(np.abs(w).max(), 1e-12)
        panels = list(0.5 + 0.5 * w.reshape(o * i, *w.shape[2:]) / scale)
        titles = [f"{a}/{b}" if b == 0 or a == 0 else "" for a in range(o) for b in range(i)]
        return grid_figure(panels, titles, i, f"{self.layer}: filters (row = output, column = input channel)", cell)
