"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", Sec. 3.1).

An explanation that explains the model must change when the model's weights are destroyed.
:func:`model_randomization` re-initialises the learned weights of the exported ONNX graph in a
cascade, from the top (output) layer down, one layer more at each step, and compares the map of
each randomised model with the original map: Spearman rank correlation and SSIM per image
(:mod:`agnostic_cam.evaluation.similarity`). Maps that stay similar are not explaining the model (an edge
detector stays similar; Grad-CAM falls quickly).

Works for every framework and for bare ONNX files: the randomised models are copies of the ONNX
graph the explainer already runs (initializers replaced), explained through ``from_onnx`` (gradient
methods need its gradient backend, extra ``onnx-grad``). The user's model is never touched.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from agnostic_cam.core.degenerate import DegenerateMapWarning
from agnostic_cam.errors import InputError, ModelError, OptionError
from agnostic_cam.evaluation.similarity import spearman, ssim

# op type -> positions of its learned inputs (BatchNormalization's running mean/var stay: they
# are statistics, and a random variance could be negative)
LEARNED_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1),
                  "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2),
                  "LayerNormalization": (1, 2), "Add": (0, 1), "Mul": (0, 1)}
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MapFn = Callable[[Any, np.ndarray], np.ndarray]


@dataclass
class Layer:
    """One learned layer of the graph: the node's name, op and the initializers it owns."""

    name: str
    op: str
    initializers: list[str]


def learned_layers(model: onnx.ModelProto) -> list[Layer]:
    """Learned layers (Conv/Gemm/MatMul with float initializer weights, plus the normalisation and
    affine Add/Mul nodes that follow them), in graph order, input side first."""
    inits = {i.name: i for i in model.graph.initializer}
    seen: set[str] = set()
    out = []
    for k, node in enumerate(model.graph.node):
        pos = LEARNED_INPUTS.get(node.op_type)
        if pos is None:
            continue
        names = [node.input[p] for p in pos if p < len(node.input) and node.input[p] in inits
                 and inits[node.input[p]].data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                                        onnx.TensorProto.FLOAT16)]
        names = [n for n in names if n not in seen and numpy_helper.to_array(inits[n]).size > 1]
        if not names or (node.op_type in ("Add", "Mul") and not out):
            continue
        if node.op_type in ("Add", "Mul") and out:  # a bias/scale of the previous learned layer
            out[-1].initializers += names
        else:
            out.append(Layer(node.name or node.output[0] or f"{node.op_type}_{k}", node.op_type, names))
        seen.update(names)
    return [ly for ly in out if ly.op in WEIGHT_OPS or ly.op.endswith("Normalization")]


def randomized(model: onnx.ModelProto, layers: list[Layer], rng: np.random.Generator) -> onnx.ModelProto:
    """A copy of ``model`` whose ``layers``' initializers are redrawn from N(0, s^2), s the
    original tensor's standard deviation (its mean magnitude if constant; all-zero tensors stay)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = {n for ly in layers for n in ly.initializers}
    for init in m.graph.initializer:
        if init.name not in names:
            continue
        a = numpy_helper.to_array(init)
        s = float(a.std()) or float(np.abs(a).mean())
        new = rng.normal(0.0, s, size=a.shape).astype(a.dtype) if s > 0 else a
        init.CopyFrom(numpy_helper.from_array(new, init.name))
    return m


@dataclass
class SanityResult:
    """Result of :func:`model_randomization`. S steps, N images, maps (H, W).

    layers: learned layers, top first; steps[s]: how many of them were randomised at step s.
    spearman, ssim: (S, N) similarity of each randomised map to the original map.
    original: (N, H, W) heatmaps; maps: (S, N, H, W) heatmaps of the randomised models.
    """

    method: str
    layers: list[str]
    steps: list[int]
    spearman: np.ndarray
    ssim: np.ndarray
    original: np.ndarray
    maps: np.ndarray
    images: np.ndarray | None = field(default=None, repr=False)

    def final(self) -> dict[str, float]:
        """Mean similarity once every learned layer is randomised (the last step)."""
        return {"spearman": float(np.nanmean(self.spearman[-1])), "ssim": float(np.nanmean(self.ssim[-1]))}

    def insensitive(self, threshold: float = 0.5) -> bool:
        """True when the maps barely change: mean Spearman of the fully randomised model >= threshold."""
        return self.final()["spearman"] >= threshold

    def figure(self, image: int = 0, max_cols: int = 8):
        """A matplotlib Figure: the original map of ``image`` and its randomised maps along the
        cascade (top), mean Spearman and SSIM against the number of randomised layers (bottom)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        pick = np.unique(np.linspace(0, len(self.steps) - 1, min(max_cols - 1, len(self.steps))).round().astype(int))
        fig = Figure(figsize=(1.6 * (len(pick) + 1), 4.6))
        grid = fig.add_gridspec(2, len(pick) + 1, height_ratios=(1, 1.1))
        panels = [("original", self.original[image])] + [
            (f"top {self.steps[s]}\n(..{self.layers[self.steps[s] - 1][-14:]})", self.maps[s, image]) for s in pick]
        for j, (title, m) in enumerate(panels):
            ax = fig.add_subplot(grid[0, j])
            ax.imshow(m, cmap="jet", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = fig.add_subplot(grid[1, :])
        ax.plot(self.steps, np.nanmean(self.spearman, axis=1), "o-", label="Spearman")
        ax.plot(self.steps, np.nanmean(self.ssim, axis=1), "s--", label="SSIM")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xticks(self.steps)
        ax.set_xlabel("layers randomised from the top (cascading)")
        ax.set_ylabel("similarity to original")
        ax.set_title(f"{self.method}: model randomisation test", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _map_fn(method: str | MapFn, target, options: dict) -> tuple[str, MapFn]:
    if callable(method):
        return getattr(method, "__name__", "callable"), method
    if not isinstance(method, str):
        raise InputError(f"method must be a method name or a callable (explainer, images) -> (N, H, W); got {type(method).__name__}")
    return method, lambda ex, x: ex.explain(x, method, target=target, **options).heatmap


def _rank_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; a constant map carries no ranking, so it scores 0 against a non-constant
    map (the map was destroyed) and 1 against a constant one."""
    r = spearman(a, b)
    if np.isnan(r):
        return 1.0 if np.ptp(a) == 0 and np.ptp(b) == 0 else 0.0
    return r


def model_randomization(ex, images: Any, method: str | MapFn = "gradcam", target=None, steps: int | None = None,
                        seed: int = 0, **options) -> SanityResult:
    """Cascading model-randomisation test of ``method`` on ``images`` (Adebayo et al. 2018).

    ex: any :class:`~agnostic_cam.Explainer` (PyTorch, Keras or ONNX); its model is not modified.
    method: a method name (``options`` go to it) or a callable ``(explainer, images) -> (N, H, W)``
        maps in [0, 1] (e.g. a baseline that ignores the model).
    target: as in ``explain``; None explains each image's original top-1 class in every model.
    steps: at most this many cascade steps, spread evenly over the learned layers (None: one step
        per layer). seed: the random weights' seed.
    """
    from agnostic_cam.explainer import Explainer

    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise OptionError(f"steps must be a positive int or None (one step per learned layer); got {steps!r}")
    x = ex._inputs(images)
    ad = ex.adapter
    proto = ad.engine(x.shape[1:]).model
    layers = learned_layers(proto)[::-1]
    if not layers:
        raise ModelError("the model's ONNX graph has no learned layers with initializer weights "
                         "(Conv/Gemm/MatMul) to randomise")
    if target is None:
        target = [int(c) for c in ex.predict(x).argmax(axis=1)]
    name, fn = _map_fn(method, target, options)
    original = np.asarray(fn(ex, x), dtype=np.float32)
    counts = list(range(1, len(layers) + 1)) if steps is None or steps >= len(layers) else \
        sorted({int(round(v)) for v in np.linspace(1, len(layers), steps)})
    rng = np.random.default_rng(seed)
    maps, rho, ss = [], [], []
    for k in counts:
        rand = Explainer.from_onnx(randomized(proto, layers[:k], np.random.default_rng(rng.integers(2**63))),
                                   target_layer=ad.activation_name, layout=ad.layout, output=ad.output_name,
                                   providers=ad.providers, progress=False)
        with warnings.catch_warnings():  # a randomised model's maps may well be degenerate: that is the point
            warnings.simplefilter("ignore", DegenerateMapWarning)
            m = np.asarray(fn(rand, x), dtype=np.float32)
        maps.append(m)
        rho.append([_rank_similarity(a, b) for a, b in zip(original, m)])
        ss.append([ssim(a, b) for a, b in zip(original, m)])
    return SanityResult(name, [ly.name for ly in layers], counts, np.array(rho), np.array(ss), original,
                        np.stack(maps), x)
