"""Deep Feature Factorization (Collins et al. 2018), pytorch-grad-cam 1.5.7's definition, on the
target layer's activations from ONNX Runtime (any framework, bare ONNX files included).

The activations of all images (N, C, h, w) form a (C, N*h*w) matrix; each channel is shifted by its
minimum so it is non-negative, and non-negative matrix factorisation (scikit-learn's ``NMF``,
``init='random'``, ``random_state=0``) splits it into k concepts: W (C, k), each a direction in
channel space (``concepts`` = W + the shift), and H (k, N*h*w), where each concept sits in each
image. ``explanations`` (N, k, H, W): H per image and concept, min-max scaled and resized to the
input. ``concept_scores`` (k, K): the model's head applied to each concept (the activation map
filled with the concept vector, run through the graph after the layer), when the head can be cut.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agnostic_cam.errors import AgnosticCamError, MissingDependencyError, OptionError
from agnostic_cam.core.imaging import minmax, resize_bilinear


def dff(acts: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """acts (N, C, h, w) -> concepts (C, k), explanations (N, k, h, w) at the layer's resolution."""
    try:
        from sklearn.decomposition import NMF
    except ImportError:
        raise MissingDependencyError("feature_factorization needs scikit-learn's NMF: pip install scikit-learn "
                                     "(or pip install 'agnostic-cam[dff]')") from None
    n, c, h, w = acts.shape
    flat = np.nan_to_num(acts.transpose(1, 0, 2, 3)).reshape(c, -1)
    offset = flat.min(axis=1)
    model = NMF(n_components=n_components, init="random", random_state=0)
    wmat = model.fit_transform(flat - offset[:, None])
    return wmat + offset[:, None], model.components_.reshape(n_components, n, h, w).transpose(1, 0, 2, 3)


@dataclass
class Factorization:
    """concepts (C, k); explanations (N, k, H, W) in [0, 1]; concept_scores (k, K) or None;
    images (N, H, W, 3) uint8 for the figure."""

    concepts: np.ndarray
    explanations: np.ndarray
    concept_scores: np.ndarray | None
    layer: str
    images: np.ndarray | None = field(default=None, repr=False)

    def top_classes(self, k: int = 2, labels: list[str] | None = None) -> list[str]:
        """Per concept, its ``k`` best classes by softmax of ``concept_scores`` ("label:prob" lines)."""
        if self.concept_scores is None:
            return [f"concept {i}" for i in range(len(self.concepts.T))]
        s = self.concept_scores - self.concept_scores.max(axis=1, keepdims=True)
        p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
        best = np.argsort(-p, axis=1, kind="stable")[:, :k]
        name = (lambda j: labels[j]) if labels is not None else str
        return ["\n".join(f"{name(j)}:{p[i, j]:.2f}" for j in row) for i, row in enumerate(best)]

    def overlay(self, image_weight: float = 0.5) -> np.ndarray:
        """(N, H, W, 3) uint8: each pixel coloured by its strongest concept, brightness = its value."""
        import matplotlib

        k = self.explanations.shape[1]
        colors = np.array([matplotlib.colormaps["gist_rainbow"](i / k)[:3] for i in range(k)], np.float32)
        best = self.explanations.argmax(axis=1)
        val = np.take_along_axis(self.explanations, best[:, None], axis=1)[:, 0]
        mask = colors[best] * val[..., None]
        img = np.zeros_like(mask) if self.images is None else self.images.astype(np.float32) / 255
        return np.clip(255 * (img * image_weight + mask * (1 - image_weight)), 0, 255).astype(np.uint8)

    def figure(self, labels: list[str] | None = None, top_k: int = 2):
        """A matplotlib Figure: per image, the image and its concept map, with a legend naming each
        concept's colour and best classes."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        n, k = self.explanations.shape[:2]
        over = self.overlay()
        fig = Figure(figsize=(6.0, 2.6 * n + 0.4))
        axes = fig.subplots(n, 2, squeeze=False)
        colors = [matplotlib.colormaps["gist_rainbow"](i / k) for i in range(k)]
        for i in range(n):
            if self.images is not None:
                axes[i, 0].imshow(self.images[i])
            axes[i, 1].imshow(over[i])
            for ax in axes[i]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0, 1].set_title(f"{k} concepts @ {self.layer}", fontsize=9)
        fig.legend([Line2D([0], [0], color=c, lw=4) for c in colors], self.top_classes(top_k, labels),
                   loc="lower center", ncol=min(k, 5), fontsize=7)
        fig.tight_layout(rect=(0, 0.12 if n == 1 else 0.06, 1, 1))
        return fig


def feature_factorization(ex, x: np.ndarray, n_components: int = 5) -> Factorization:
    """Deep Feature Factorization of the validated batch ``x`` at ``ex``'s target layer."""
    from agnostic_cam.core.capture import Needs
    from agnostic_cam.targets import TargetSpec
    from agnostic_cam.render.figures import to_display

    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise OptionError(f"n_components must be a positive int; got {n_components!r}")
    try:
        cap = ex.capture(x, TargetSpec(None, x.shape[0]), Needs.ACTIVATIONS | Needs.TAIL)
        tail = cap.tail
    except AgnosticCamError:  # the head cannot be cut after the layer: concepts without class scores
        cap, tail = ex.capture(x, TargetSpec(None, x.shape[0]), Needs.ACTIVATIONS), None
    acts = cap.activations
    concepts, expl = dff(acts, int(n_components))
    n, k, h, w = expl.shape
    size = cap.input_size
    heat = resize_bilinear(minmax(expl.reshape(n * k, h, w)), size).reshape(n, k, *size)
    scores = None
    if tail is not None:
        filled = np.broadcast_to(concepts.T[:, :, None, None], (k, acts.shape[1], h, w)).astype(np.float32)
        scores = tail(np.ascontiguousarray(filled), np.zeros(k, np.int64)).astype(np.float64)
    try:
        images = (to_display(x) * 255).round().astype(np.uint8)
    except AgnosticCamError:  # not displayable (e.g. not 1 or 3 channels): figure without images
        images = None
    return Factorization(concepts.astype(np.float32), heat.astype(np.float32), scores, ex.layer, images)
