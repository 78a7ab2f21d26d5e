"""Pictures of volume and video explanations: heatmaps (N, D, H, W) over inputs (N, C, D, H, W).

A 4-D heatmap is a volume (axes depth, height, width) or a video (time, height, width); the
arrays cannot tell which, so the picture asks: ``kind="volume"`` or ``kind="video"``, or the
explanation's ``meta["kind"]`` when whoever built it set one; otherwise an :class:`OptionError`.

- :func:`overlay_volume`: each slice (frame) of the heatmap blended over the input's slice (frame),
  (N, D, H, W, 3) uint8, with the 2-D overlay's formula; the input is scaled to [0, 1] per volume.
- :func:`slice_grid` (volumes): three rows of ``slices`` evenly spaced slices (the centres of
  ``slices`` equal bins of the axis, :func:`slice_indices`): axial (fixed depth d, tiles H x W),
  coronal (fixed row h, tiles D x W) and sagittal (fixed column w, tiles D x H), depth downwards in
  the last two. Every tile sits at the top left of a cell of (max(H, D), max(W, H)) pixels; cell
  (r, j) starts at pixel (r * (cell_h + gap), j * (cell_w + gap)); the rest is white.
- :func:`frame_strip` (video): the frames side by side (``frames`` evenly spaced ones; default all,
  at most 16), frame j starting at column j * (W + gap).
- :func:`save_gif`: an animated GIF with one frame per slice / frame (Pillow), the rows stacked
  vertically. GIF stores 256 colours a frame, so its pixels are close to, not equal to, the overlay's;
  Pillow merges identical consecutive frames (their durations add).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.render.figures import FONT, add_colorbar, overlay, to_display
from agnostic_cam.targets.dispatch import to_numpy

KINDS = ("volume", "video")
VIEWS = ("axial", "coronal", "sagittal")


def resolve_kind(kind: str | None, meta: dict | None = None) -> str:
    """``kind``, else ``meta["kind"]``; an OptionError when neither says 'volume' or 'video'."""
    kind = kind if kind is not None else (meta or {}).get("kind")
    if kind is None:
        raise OptionError("a 4-D heatmap (N, D, H, W) is a volume or a video and the explanation does not say which; "
                          "pass kind='volume' (slice grid) or kind='video' (frame strip)")
    if kind not in KINDS:
        raise OptionError(f"kind must be 'volume' or 'video'; got {kind!r}")
    return kind


def volume_display(images: Any, shape: tuple) -> np.ndarray:
    """Inputs for the heatmaps of ``shape`` (N, D, H, W) as (N, D, H, W, 3) float in [0, 1].

    Accepts (N, C, D, H, W) or (N, D, H, W, C) with 1 or 3 channels, or (N, D, H, W) grey, uint8 or
    float (floats outside [0, 1] are min-max scaled per volume, as :func:`to_display` does per image)."""
    x = to_numpy(images)
    n, d, h, w = shape
    if x.ndim == 4 and x.shape == tuple(shape):
        x = x[..., None]
    elif x.ndim == 5 and x.shape[1] in (1, 3) and x.shape[2:] == (d, h, w):
        x = x.transpose(0, 2, 3, 4, 1)
    elif not (x.ndim == 5 and x.shape[1:4] == (d, h, w) and x.shape[-1] in (1, 3)):
        raise InputError(f"images {x.shape} do not fit heatmaps {tuple(shape)}: pass the explained inputs, "
                         "(N, C, D, H, W) or (N, D, H, W, C) with 1 or 3 channels")
    if x.shape[0] != n:
        raise InputError(f"{x.shape[0]} inputs for {n} heatmaps; pass one input per row")
    flat = to_display(x.reshape(n, d * h, w, x.shape[-1]))  # one 2-D picture per volume: scaled per volume
    return flat.reshape(n, d, h, w, 3)


def overlay_volume(images: Any, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """(N, D, H, W, 3) uint8: each slice of ``heatmap`` (N, D, H, W) over the input's slice."""
    heat = np.asarray(heatmap)
    if heat.ndim != 4:
        raise InputError(f"volume and video heatmaps are (N, D, H, W); got shape {heat.shape}")
    n, d, h, w = heat.shape
    img = volume_display(images, heat.shape)
    return overlay(img.reshape(n, d * h, w, 3), heat.reshape(n, d * h, w), alpha, colormap).reshape(n, d, h, w, 3)


def slice_indices(size: int, count: int) -> np.ndarray:
    """``count`` evenly spaced indices into an axis of ``size``: the centres of ``count`` equal bins
    (every index when ``count >= size``)."""
    if count < 1:
        raise OptionError(f"the number of slices must be >= 1; got {count}")
    count = min(count, size)
    return np.floor((np.arange(count) + 0.5) * size / count).astype(np.int64)


def views(over: np.ndarray, slices: int) -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
    """(view, indices, tiles) for the axial, coronal and sagittal rows of one volume's overlay (D, H, W, 3)."""
    d, h, w = over.shape[:3]
    idx = [slice_indices(d, slices), slice_indices(h, slices), slice_indices(w, slices)]
    return [("axial", idx[0], [over[k] for k in idx[0]]),
            ("coronal", idx[1], [over[:, k] for k in idx[1]]),
            ("sagittal", idx[2], [over[:, :, k] for k in idx[2]])]


def _grid(rows: list[list[np.ndarray]], cell: tuple[int, int], gap: int) -> np.ndarray:
    """Tiles in rows, each at the top left of its cell; white between and around them."""
    ch, cw = cell
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * ch + (len(rows) - 1) * gap, cols * cw + (cols - 1) * gap, 3), 255, np.uint8)
    for r, tiles in enumerate(rows):
        for j, t in enumerate(tiles):
            y, x = r * (ch + gap), j * (cw + gap)
            out[y:y + t.shape[0], x:x + t.shape[1]] = t
    return out


def slice_grid(over: np.ndarray, slices: int = 6, gap: int = 2) -> np.ndarray:
    """One volume's overlay (D, H, W, 3) as a picture: axial, coronal and sagittal rows of ``slices``
    slices each (layout in the module docstring)."""
    d, h, w = over.shape[:3]
    return _grid([tiles for _, _, tiles in views(over, slices)], (max(h, d), max(w, h)), gap)


MAX_FRAMES = 16


def strip_frames(size: int, frames: int | None) -> np.ndarray:
    """The frames a strip shows: ``frames`` evenly spaced ones; default every frame, at most :data:`MAX_FRAMES`."""
    return slice_indices(size, frames if frames is not None else min(size, MAX_FRAMES))


def frame_strip(over: np.ndarray, frames: int | None = None, gap: int = 2) -> np.ndarray:
    """One video's overlay (T, H, W, 3) as its frames side by side (:func:`strip_frames`)."""
    return _grid([[over[t] for t in strip_frames(over.shape[0], frames)]], over.shape[1:3], gap)


def pictures(over: np.ndarray, kind: str, count: int | None = None, gap: int = 2) -> np.ndarray:
    """(N, Hp, Wp, 3) uint8: a slice grid (volume; ``count`` slices a view, default 6) or a frame strip
    (video; ``count`` frames, default all up to :data:`MAX_FRAMES`) per row of ``over`` (N, D, H, W, 3)."""
    if kind == "volume":
        return np.stack([slice_grid(o, count or 6, gap) for o in over])
    return np.stack([frame_strip(o, count, gap) for o in over])


def save_gif(over: np.ndarray, path: str | Path, duration: int = 200, gap: int = 2) -> Path:
    """An animated GIF of ``over`` (N, F, H, W, 3): frame f shows slice / frame f of every row, rows
    stacked vertically; ``duration`` ms a frame, looping."""
    from PIL import Image

    frames = [_grid([[o[f]] for o in over], over.shape[2:4], gap) for f in range(over.shape[1])]
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(path, save_all=True, append_images=rest, duration=duration, loop=0)
    return Path(path)


def figure(exp: Any, images: Any, kind: str, count: int | None = None, alpha: float = 0.5, colormap: str = "jet"):
    """A matplotlib Figure: per row of ``exp`` its slice grid or frame strip, labelled with the image,
    class and score; ticks name the views and the slice / frame indices."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    over = exp.overlay(images, alpha, colormap)
    pics = pictures(over, kind, count)
    n, (ph, pw) = len(pics), pics.shape[1:3]
    width = min(12.0, 1.5 + pw / 40)  # about 40 px an inch, labels on the left
    fig = Figure(figsize=(width, n * ((width - 2.3) * ph / pw + 0.45) + 0.9), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    d, h, w = over.shape[1:4]
    for r, ((image, cls), ax) in enumerate(zip(exp.rows, axes)):
        ax.imshow(pics[r])
        label = f"image {image}\n" + ("" if cls is None else f"class {cls}\n") + f"score {float(exp.scores[r]):.3g}"
        ax.set_xlabel(label.replace("\n", ", "), fontsize=FONT)
        if kind == "volume":
            ch = max(h, d)
            ax.set_yticks([k * (ch + 2) + (h if k == 0 else d) / 2 for k in range(3)],  # tile centres
                          [f"{v}\n{a}={','.join(map(str, i))}" for (v, i, _), a in zip(views(over[r], count or 6), "dhw")],
                          fontsize=FONT)
            ax.set_xticks([])
        else:
            t = strip_frames(d, count)
            ax.set_yticks([])
            ax.set_xticks([j * (w + 2) + w / 2 for j in range(len(t))], [f"t={k}" for k in t], fontsize=FONT)
    what = "slices evenly spaced along each axis" if kind == "volume" else "frames"
    fig.suptitle(f"{exp.method}{f' at layer {exp.layer}' if exp.uses_layer() else ''}: {what}", fontsize=FONT + 1)
    add_colorbar(fig, axes, colormap)
    return fig
