"""One result type for every method and framework."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Explanation:
    """The result of ``Explainer.explain``.

    heatmap: (N, H, W) float32 in [0, 1] at the input resolution.
    raw: the method's map before ReLU/normalisation, at its native resolution (the layer's (h, w)
        for CAMs).
    targets: (N,) class indices explained, or None for a callable target.
    scores: (N,) the model's output for those targets.
    method, layer: what produced it. outputs: the model's full output (N, K).
    """

    heatmap: np.ndarray
    raw: np.ndarray
    targets: np.ndarray | None
    scores: np.ndarray
    method: str
    layer: str
    outputs: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.heatmap.shape[0]

    def __repr__(self) -> str:
        t = None if self.targets is None else self.targets.tolist()
        return f"Explanation(method={self.method!r}, layer={self.layer!r}, n={len(self)}, size={self.heatmap.shape[1:]}, targets={t})"

    def overlay(self, images: Any, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
        """(N, H, W, 3) uint8 RGB: the heatmap blended over ``images`` (uint8 or float, NCHW or NHWC)."""
        from agnostic_cam.viz import overlay

        return overlay(images, self.heatmap, alpha, colormap)

    def figure(self, images: Any, alpha: float = 0.5, colormap: str = "jet"):
        """A matplotlib Figure with, per image: the image, the heatmap and the overlay."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        from agnostic_cam.viz import to_display

        img = to_display(images)
        n = img.shape[0]
        fig = Figure(figsize=(6.5, 2.2 * n + 0.3))
        axes = fig.subplots(n, 3, squeeze=False)
        over = self.overlay(img, alpha, colormap)
        for i in range(n):
            axes[i, 0].imshow(img[i])
            axes[i, 1].imshow(self.heatmap[i], cmap=colormap, vmin=0, vmax=1)
            axes[i, 2].imshow(over[i])
            label = "" if self.targets is None else f"class {int(self.targets[i])}, "
            axes[i, 2].set_title(f"{label}score {self.scores[i]:.3g}", fontsize=8)
        for ax, t in zip(axes[0], ("image", f"{self.method} @ {self.layer}", "overlay")):
            ax.set_title(t if not ax.get_title() else f"{t}\n{ax.get_title()}", fontsize=9)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        return fig

    def save(self, path: str | Path, images: Any = None) -> Path:
        """Save to ``.npz`` (all arrays and metadata) or, given ``images``, a ``.png`` figure."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            if images is None:
                raise ValueError("saving a .png needs the images: exp.save('x.png', images)")
            self.figure(images).savefig(path, dpi=100)
        elif path.suffix.lower() == ".npz":
            np.savez_compressed(path, heatmap=self.heatmap, raw=self.raw, scores=self.scores,
                                targets=np.array([]) if self.targets is None else self.targets,
                                method=self.method, layer=self.layer)
        else:
            raise ValueError(f"unsupported file type {path.suffix!r}: use .npz (data) or .png (figure)")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read an Explanation saved as ``.npz``."""
        with np.load(path) as z:
            t = z["targets"]
            return cls(z["heatmap"], z["raw"], t if t.size else None, z["scores"], str(z["method"]), str(z["layer"]))
