"""One result type for every method and framework."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from agnostic_cam.errors import InputError, OptionError

from agnostic_cam.core import layout as L
@dataclass
class Explanation:
    """The result of ``Explainer.explain``.

    heatmap: (N, H, W) float32 in [0, 1] at the input resolution.
    raw: the method's map before ReLU/normalisation, at its native resolution (the layer's (h, w)
        for CAMs); for pixel-space methods (saliency, guided backprop, integrated gradients, ...)
        the signed attribution (N, C, H, W), channel-first whatever the model's layout.
    targets: (N,) class indices explained, or None for a callable target.
    scores: (N,) the model's output for those targets.
    method, layer: what produced it. outputs: the model's full output (N, K).
    degenerate: (N,) bool, True where the map is constant or at rounding-noise level (it is still
        returned as computed, but carries no spatial information); degenerate_reason: (N,) str,
        why ("" where the map is fine). See :mod:`agnostic_cam.core.degenerate`.
    layer_used: whether the method read the target layer (False for pixel-space and layer-free
        methods; the pipeline sets it from the method's ``needs``); figure titles name the layer only
        when it is. None (an Explanation built by hand): a pixel-space ``raw`` (N, C, H, W) reads none.
    image_index: (N,) int, the input image each row explains, when rows are not one per image
        (multi-label targets: one row per (image, present class), see :mod:`agnostic_cam.core.rows`;
        ``rows`` lists the (image, class) pairs); None: row i is image i.
    """

    heatmap: np.ndarray
    raw: np.ndarray
    targets: np.ndarray | None
    scores: np.ndarray
    method: str
    layer: str
    outputs: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    degenerate: np.ndarray | None = None
    degenerate_reason: np.ndarray | None = None
    layer_used: bool | None = None
    image_index: np.ndarray | None = None

    def __len__(self) -> int:
        return self.heatmap.shape[0]

    def __repr__(self) -> str:
        t = None if self.targets is None else self.targets.tolist()
        return f"Explanation(method={self.method!r}, layer={self.layer!r}, n={len(self)}, size={self.heatmap.shape[1:]}, targets={t})"

    @property
    def rows(self) -> list[tuple[int, int | None]]:
        """(image, class) of each row: the input image it explains and the class index (None for a
        callable target)."""
        image = range(len(self)) if self.image_index is None else self.image_index.tolist()
        return [(int(i), None if self.targets is None or self.targets[r] < 0 else int(self.targets[r]))
                for r, i in enumerate(image)]

    def row_images(self, images: Any) -> Any:
        """``images`` (one per input image) as one per row: ``images[image_index]``."""
        if self.image_index is None:
            return images
        from agnostic_cam.targets.dispatch import to_numpy

        x = to_numpy(images)
        if len(self.image_index) and int(self.image_index.max()) >= len(x):
            raise InputError(f"the explanation's rows explain images up to index {int(self.image_index.max())}; "
                             f"pass the {int(self.image_index.max()) + 1} or more images that were explained, not {len(x)}")
        return x[self.image_index]

    def _drawable(self) -> None:
        if len(self) == 0:
            why = " (no image has a present class: see meta['multilabel'])" if "multilabel" in self.meta else ""
            raise InputError(f"the explanation has no rows{why}; there is nothing to draw")

    def overlay(self, images: Any, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
        """(N, H, W, 3) uint8 RGB: the heatmap blended over ``images`` (uint8 or float, NCHW or NHWC),
        one per row (multi-label rows: over the image each row explains). Volume and video heatmaps
        (N, D, H, W): (N, D, H, W, 3), each slice or frame over the input's (:mod:`agnostic_cam.render.volume`)."""
        from agnostic_cam.render.figures import overlay

        if len(self) == 0:  # no rows (multi-label images without a present class): no pictures
            return np.zeros((*self.heatmap.shape, 3), np.uint8)
        if self.heatmap.ndim == 4:
            from agnostic_cam.render.volume import overlay_volume

            return overlay_volume(self.row_images(images), self.heatmap, alpha, colormap)
        return overlay(self.row_images(images), self.heatmap, alpha, colormap)

    # -- pixel-space renderings (gradient methods) ------------------------------------------
    def _pixel_raw(self) -> np.ndarray:
        if self.raw.ndim != 4:
            raise InputError(f"method {self.method!r} gives a {self.raw.ndim - 1}-D map, not a pixel-space attribution "
                             "(N, C, H, W); gradient_image/saliency_image apply to pixel methods such as "
                             "'saliency', 'guided_backprop', 'integrated_gradients'")
        return np.nan_to_num(self.raw.astype(np.float64))

    def gradient_image(self, sign: str | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8: the signed attribution shown as a colour image, the way the classic
        CNN-visualisation collections show gradients.

        sign None: per-image min-max of the raw values (grey = 0 only if the range is symmetric);
        'positive': relu(raw) / max(raw); 'negative': relu(-raw) / max(-raw). One-channel inputs
        are repeated to grey.
        """
        raw = self._pixel_raw()
        if sign is None:
            lo = raw.min(axis=(1, 2, 3), keepdims=True)
            img, top = raw - lo, raw.max(axis=(1, 2, 3), keepdims=True) - lo
        elif sign in ("positive", "negative"):
            img = np.maximum(raw if sign == "positive" else -raw, 0)
            top = img.max(axis=(1, 2, 3), keepdims=True)
        else:
            raise OptionError(f"sign must be None, 'positive' or 'negative'; got {sign!r}")
        img = L.from_chw(np.divide(img, top, out=np.zeros_like(img), where=top > 0), L.NHWC)
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)

    def saliency_image(self, sign: str = "abs", percentile: float = 99.0) -> np.ndarray:
        """(N, H, W) uint8 grayscale saliency: the attribution summed over channels (|raw| for
        'abs', relu(raw) for 'positive', relu(-raw) for 'negative'), then per image
        ``clip((m - min) / (p - min), 0, 1)`` with p the ``percentile``-th percentile (99, as the
        classic collections do, so a few extreme pixels do not wash out the rest)."""
        raw = self._pixel_raw()
        if sign not in ("abs", "positive", "negative"):
            raise OptionError(f"sign must be 'abs', 'positive' or 'negative'; got {sign!r}")
        m = (np.abs(raw) if sign == "abs" else np.maximum(raw if sign == "positive" else -raw, 0)).sum(axis=1)
        lo = m.min(axis=(1, 2), keepdims=True)
        hi = np.percentile(m, percentile, axis=(1, 2), keepdims=True)
        span = hi - lo
        img = np.divide(m - lo, span, out=np.zeros_like(m), where=span > 0)
        return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)

    def uses_layer(self) -> bool:
        """Whether the method read the target layer (pixel-space and layer-free methods do not)."""
        return self.raw.ndim != 4 if self.layer_used is None else bool(self.layer_used)

    def figure(self, images: Any, alpha: float = 0.5, colormap: str = "jet", kind: str | None = None):
        """A matplotlib Figure with, per image (one row, its class and score on the left): the image,
        the heatmap (pixel-space methods: the colour gradient image) and the overlay; a colour bar
        for the heatmap under the grid. The title names the layer only for methods that use one.
        Volume and video heatmaps: each row's slice grid or frame strip (``kind`` as in :meth:`picture`)."""
        self._drawable()
        if self.heatmap.ndim == 4:
            from agnostic_cam.render.volume import figure, resolve_kind

            return figure(self, images, resolve_kind(kind, self.meta), alpha=alpha, colormap=colormap)
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        from agnostic_cam.render.figures import FONT, add_colorbar, to_display

        img = to_display(self.row_images(images))
        n = img.shape[0]
        fig = Figure(figsize=(7.4, 2.1 * n + 1.1), layout="constrained")
        axes = fig.subplots(n, 3, squeeze=False)
        over = self.overlay(img, alpha, colormap)
        pixel = self.gradient_image() if self.raw.ndim == 4 else None
        for i in range(n):
            axes[i, 0].imshow(img[i])
            if pixel is not None:  # pixel-space methods: the colour gradient image
                axes[i, 1].imshow(pixel[i])
            else:
                axes[i, 1].imshow(self.heatmap[i], cmap=colormap, vmin=0, vmax=1)
            axes[i, 2].imshow(over[i])
            label = "" if self.targets is None or self.targets[i] < 0 else f"class {int(self.targets[i])}\n"
            label = label if self.image_index is None else f"image {int(self.image_index[i])}\n{label}"
            axes[i, 0].set_ylabel(f"{label}score {self.scores[i]:.3g}", fontsize=FONT, rotation=0, ha="right",
                                  va="center", labelpad=6)
        middle = "gradient" if pixel is not None else "heatmap"
        for ax, t in zip(axes[0], ("image", middle, "overlay")):
            ax.set_title(t, fontsize=FONT)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{self.method} at layer {self.layer}" if self.uses_layer() else self.method, fontsize=FONT + 1)
        add_colorbar(fig, axes, colormap, "heatmap and overlay: relevance (0 = none, 1 = most)")
        return fig

    def picture(self, images: Any, kind: str | None = None, count: int | None = None, alpha: float = 0.5,
                colormap: str = "jet") -> np.ndarray:
        """(N, Hp, Wp, 3) uint8, one picture per row: 2-D maps: the overlay; volume and video heatmaps
        (N, D, H, W): a slice grid (``kind='volume'``: axial, coronal and sagittal rows of ``count``
        slices, default 6) or a frame strip (``kind='video'``: ``count`` frames, default all, at most 16); ``kind``
        defaults to ``meta['kind']`` (an OptionError when unset). See :mod:`agnostic_cam.render.volume`."""
        if self.heatmap.ndim != 4:
            return self.overlay(images, alpha, colormap)
        from agnostic_cam.render.volume import pictures, resolve_kind

        return pictures(self.overlay(images, alpha, colormap), resolve_kind(kind, self.meta), count)

    def save(self, path: str | Path, images: Any = None, kind: str | None = None) -> Path:
        """Save to ``.npz`` (all arrays and metadata) or, given ``images``, a ``.png`` figure (volume and
        video heatmaps: the slice grids / frame strips of :meth:`picture`, ``kind`` as there) or an
        animated ``.gif`` (volumes and video: one frame per slice / frame)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".png", ".gif") and images is None:
            raise InputError(f"saving a {path.suffix} needs the images: exp.save('x{path.suffix}', images)")
        if path.suffix.lower() == ".gif":
            if self.heatmap.ndim != 4:
                raise InputError("a .gif shows volume and video heatmaps (N, D, H, W); save 2-D maps as .png")
            from agnostic_cam.render.volume import save_gif

            self._drawable()
            save_gif(self.overlay(images), path)
        elif path.suffix.lower() == ".png":
            self.figure(images, kind=kind).savefig(path, dpi=100)
        elif path.suffix.lower() == ".npz":
            np.savez_compressed(path, heatmap=self.heatmap, raw=self.raw, scores=self.scores,
                                targets=np.array([]) if self.targets is None else self.targets,
                                method=self.method, layer=self.layer,
                                **({} if self.image_index is None else {"image_index": self.image_index}),
                                **({} if self.degenerate is None else {
                                    "degenerate": self.degenerate,
                                    "degenerate_reason": np.asarray(self.degenerate_reason, dtype=str)}))
        else:
            raise InputError(f"unsupported file type {path.suffix!r}: use .npz (data), .png (figure) or .gif "
                             "(volume, video)")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read an Explanation saved as ``.npz``."""
        with np.load(path) as z:
            t = z["targets"]
            flags = {"degenerate": z["degenerate"], "degenerate_reason": z["degenerate_reason"].astype(object)} \
                if "degenerate" in z.files else {}
            if "image_index" in z.files:
                flags["image_index"] = z["image_index"]
            return cls(z["heatmap"], z["raw"], t if t.size else None, z["scores"], str(z["method"]), str(z["layer"]),
                       **flags)
