"""Faithfulness metrics for saliency maps: forward-only, batched through ONNX Runtime.

- Deletion / insertion AUC (Petsiuk et al. 2018, "RISE", sec. 4.1): pixels are removed from
  (deletion) or added to (insertion) the image in order of decreasing saliency, ``steps`` at a
  time; the target's probability is traced and the area under that curve (trapezoid rule, x in
  [0, 1]) is the score. Deletion: lower is better; insertion: higher is better.
- Average drop and increase in confidence (Chattopadhay et al. 2018, "Grad-CAM++", sec. 6.1.1):
  with Y the score on the image and O the score on the image multiplied by the map,
  average drop = 100 * mean(max(0, Y - O) / Y), increase in confidence = 100 * mean(Y < O).
- Pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop"): a hit
  when the map's maximum lies inside the object's box (grown by ``tolerance`` pixels).

``model`` is anything that maps a batch to outputs (N, K): an :class:`~agnostic_cam.Explainer`
(runs its ONNX engine), an :class:`~agnostic_cam.engine.OnnxEngine`, or a callable.
Images are in the model's layout; maps are (N, H, W).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agnostic_cam.engine.threads import blas_one_thread
from agnostic_cam.targets import for_rows
from agnostic_cam.errors import InputError, OptionError

from agnostic_cam.core import layout as L
from agnostic_cam.core.baselines import baseline_for, blur  # noqa: F401 - part of this module's API
Forward = Callable[[np.ndarray], np.ndarray]


def as_forward(model) -> Forward:
    """A callable (M, ...) -> outputs (M, K) from an Explainer, an OnnxEngine or a callable."""
    if hasattr(model, "adapter") and hasattr(model, "predict"):  # Explainer: raw float batches
        ad = model.adapter
        return lambda x: ad.engine(x.shape[1:]).run(np.asarray(x, np.float32), [ad.output_name])[0]
    if hasattr(model, "run") and hasattr(model, "output_names"):  # OnnxEngine
        return lambda x: model.run(np.asarray(x, np.float32))[0]
    if callable(model):
        return model
    raise InputError(f"model must be an Explainer, an OnnxEngine or a callable batch -> outputs; got {type(model).__name__}")


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _score(outputs: np.ndarray, classes: np.ndarray, kind: str) -> np.ndarray:
    out = np.asarray(outputs, np.float64)
    if kind == "softmax":
        out = softmax(out)
    elif kind != "raw":
        raise OptionError(f"score must be 'softmax' (probabilities from logits) or 'raw' (outputs as they are); got {kind!r}")
    return out[np.arange(out.shape[0]), classes]


def _check(images: np.ndarray, maps: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(images, np.float32)
    m = np.asarray(maps, np.float32)
    layout = L.image_layout(layout)
    if x.ndim != 4:
        raise InputError(f"images must be a batch (N, C, H, W) or (N, H, W, C); got shape {x.shape}")
    hw = L.spatial_size(x.shape, layout)
    if m.shape != (x.shape[0], *hw):
        raise InputError(f"maps must be (N, H, W) = {(x.shape[0], *hw)} to match the images ({layout}); got {m.shape}. "
                         "Use Explanation.heatmap (input resolution)")
    return x, m


def _targets(model_fwd: Forward, x: np.ndarray, targets, batch: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.concatenate([model_fwd(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
    if targets is None:
        return out, out.argmax(axis=1)
    t = np.broadcast_to(np.asarray(targets, np.int64), (x.shape[0],))
    return out, t


@dataclass
class Curve:
    """A deletion or insertion curve per image: ``scores`` (N, steps + 1) at pixel fractions ``x``."""

    x: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        """(N,) area under each curve, trapezoid rule over x in [0, 1]."""
        s = self.scores
        return (s[:, 1:] + s[:, :-1]).sum(axis=1) / 2 / (s.shape[1] - 1)


@blas_one_thread()  # small NumPy products between forward passes: see engine/threads.py
def perturbation_curve(model, images, maps, mode: str, targets=None, steps: int = 20, baseline=None,
                       layout: str = "NCHW", score: str = "softmax", batch_size: int = 64,
                       progress: bool | None = None) -> Curve:
    """Deletion (``mode='deletion'``) or insertion curve of ``maps`` (N, H, W) for ``images``.

    ``targets``: None (top-1), class indices, or a callable / task target on the raw outputs (then
    ``score`` is not used), e.g. :class:`~agnostic_cam.targets.DetectionBoxes`.
    Step k (0..steps) has the ceil(k * H * W / steps) most salient pixels (ties broken by
    position) taken from the baseline (deletion) or from the image (insertion); every channel
    of a pixel moves together. Default baselines: zeros for deletion, a blurred image for
    insertion (the paper's choices).
    """
    from tqdm.auto import tqdm

    if mode not in ("deletion", "insertion"):
        raise OptionError(f"mode must be 'deletion' or 'insertion'; got {mode!r}")
    if not isinstance(steps, int) or steps < 1:
        raise OptionError(f"steps must be a positive int; got {steps!r}")
    fwd = as_forward(model)
    x, m = _check(images, maps, layout)
    base = baseline_for(x, baseline if baseline is not None else ("zero" if mode == "deletion" else "blur"), layout)
    fn = targets if callable(targets) else None  # a task target (DetectionBoxes, SegmentationMask, ...)
    if fn is not None:
        t = np.zeros(x.shape[0], np.int64)
    elif targets is None:  # the top-1 classes need one forward pass; given targets need none
        _, t = _targets(fwd, x, targets, batch_size)
    else:
        t = np.broadcast_to(np.asarray(targets, np.int64), (x.shape[0],))
    n, (h, w) = x.shape[0], m.shape[1:]
    counts = np.ceil(np.arange(steps + 1) * (h * w) / steps).astype(np.int64)
    order = np.argsort(-m.reshape(n, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None].repeat(n, 0), axis=1)
    scores = np.empty((n, steps + 1))
    jobs = [(i, k) for i in range(n) for k in range(steps + 1)]
    with tqdm(total=len(jobs), desc=mode.capitalize(), leave=False,
              disable=None if progress is None else not progress) as bar:
        for lo in range(0, len(jobs), batch_size):
            chunk = jobs[lo:lo + batch_size]
            ii = np.array([j[0] for j in chunk])
            moved = rank[ii] < counts[[j[1] for j in chunk]][:, None]          # (M, H*W) pixels taken
            moved = L.expand_mask(moved.reshape(-1, h, w), layout)
            src, dst = (base, x) if mode == "deletion" else (x, base)
            batch = np.where(moved, src[ii], dst[ii])
            out = fwd(batch)
            s = _score(out, t[ii], score) if fn is None else np.asarray(for_rows(fn, ii)(out), np.float64).reshape(-1)
            for (i, k), v in zip(chunk, s):
                scores[i, k] = v
            bar.update(len(chunk))
    return Curve(counts / (h * w), scores)


def deletion_auc(model, images, maps, targets=None, **kw) -> np.ndarray:
    """(N,) deletion AUC (lower is better). Options as :func:`perturbation_curve`."""
    return perturbation_curve(model, images, maps, "deletion", targets, **kw).auc


def insertion_auc(model, images, maps, targets=None, **kw) -> np.ndarray:
    """(N,) insertion AUC (higher is better). Options as :func:`perturbation_curve`."""
    return perturbation_curve(model, images, maps, "insertion", targets, **kw).auc


def confidence_change(model, images, maps, targets=None, layout: str = "NCHW", score: str = "softmax",
                      batch_size: int = 64) -> dict[str, np.ndarray]:
    """Per-image ``drop`` = max(0, Y - O) / Y and ``increase`` = (O > Y), with O the score on image * map.

    Average drop (%) = 100 * drop.mean(); increase in confidence (%) = 100 * increase.mean().
    """
    fwd = as_forward(model)
    x, m = _check(images, maps, layout)
    out, t = _targets(fwd, x, targets, batch_size)
    masked = x * L.expand_mask(m, layout)
    out_m = np.concatenate([fwd(masked[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    y, o = _score(out, t, score), _score(out_m, t, score)
    if (y <= 0).any():
        raise InputError("average drop needs positive scores Y; use score='softmax' for models that output logits")
    return {"drop": np.maximum(0.0, y - o) / y, "increase": (o > y).astype(np.float64), "score": y, "masked_score": o}


def average_drop(model, images, maps, targets=None, **kw) -> float:
    """Average drop in % (lower is better), Chattopadhay et al. 2018."""
    return float(100 * confidence_change(model, images, maps, targets, **kw)["drop"].mean())


def increase_in_confidence(model, images, maps, targets=None, **kw) -> float:
    """Increase in confidence in % (higher is better), Chattopadhay et al. 2018."""
    return float(100 * confidence_change(model, images, maps, targets, **kw)["increase"].mean())


def pointing_game(maps, boxes, tolerance: int = 0) -> np.ndarray:
    """(N,) bool: is each map's maximum inside its box (y0, x0, y1, x1), grown by ``tolerance`` px?

    ``boxes`` (N, 4), end-exclusive; or a list of (K_i, 4) arrays when an image has several
    objects of the class (a hit if the maximum falls in any); or boolean object masks (N, H, W)
    (a hit if any pixel of maximal value lies in the mask, as Quantus's PointingGame). Accuracy = hits.mean().
    """
    m = np.asarray(maps, np.float32)
    if m.ndim != 3:
        raise InputError(f"maps must be (N, H, W); got shape {m.shape}")
    if len(boxes) != m.shape[0]:
        raise InputError(f"got {len(boxes)} boxes for {m.shape[0]} maps; pass one box (or box list) per image")
    hits = np.zeros(m.shape[0], dtype=bool)
    if isinstance(boxes, np.ndarray) and boxes.dtype == bool and boxes.shape == m.shape:  # object masks
        top = m.reshape(len(m), -1) == m.reshape(len(m), -1).max(axis=1, keepdims=True)
        return (top & boxes.reshape(len(m), -1)).any(axis=1)
    for i, (mi, bi) in enumerate(zip(m, boxes)):
        b = np.asarray(bi, np.float64).reshape(-1, 4)
        y, x = np.unravel_index(int(np.argmax(mi)), mi.shape)
        inside = ((b[:, 0] - tolerance <= y) & (y < b[:, 2] + tolerance) &
                  (b[:, 1] - tolerance <= x) & (x < b[:, 3] + tolerance))
        hits[i] = bool(inside.any())
    return hits
