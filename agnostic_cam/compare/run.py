"""``compare(explainers, images, methods=...)``: the same images, methods and classes through any
number of explainers (PyTorch, Keras, ONNX in any mix), then every pair's heatmaps measured
against each other (:mod:`agnostic_cam.compare.measures`). No framework is imported here: each
explainer runs its own model.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agnostic_cam.compare.measures import check_top, map_measures
from agnostic_cam.compare.result import Comparison
from agnostic_cam.errors import InputError, OptionError

LAYOUTS = ("NCHW", "NHWC")


def name_explainers(explainers) -> dict:
    """``explainers`` (a mapping name -> Explainer, or a sequence) as an ordered dict; a sequence is
    named by framework, repeats numbered (``onnx``, ``onnx-2``)."""
    if isinstance(explainers, Mapping):
        named = {str(k): v for k, v in explainers.items()}
    elif isinstance(explainers, Sequence) and not isinstance(explainers, str):
        named, seen = {}, {}
        for ex in explainers:
            fw = getattr(getattr(ex, "adapter", None), "framework", "model")
            seen[fw] = seen.get(fw, 0) + 1
            named[fw if seen[fw] == 1 else f"{fw}-{seen[fw]}"] = ex
    else:
        raise InputError(f"explainers must be a list of Explainers or a dict name -> Explainer; got "
                         f"{type(explainers).__name__}")
    if len(named) < 2:
        raise InputError(f"compare needs at least two explainers; got {len(named)}")
    for k, ex in named.items():
        if not hasattr(ex, "explain") or not hasattr(ex, "adapter"):
            raise InputError(f"explainer {k!r} is a {type(ex).__name__}, not an agnostic_cam Explainer (build one with "
                             "Explainer.from_torch / from_keras / from_onnx)")
    return named


def inputs_for(named: dict, images, layout: str) -> dict[str, np.ndarray]:
    """Each explainer's copy of ``images`` in its own input layout. ``images``: one float array in
    ``layout`` (transposed per explainer), or a dict name -> array already in that explainer's layout."""
    if isinstance(images, Mapping):
        missing = [k for k in named if k not in images]
        if missing:
            raise InputError(f"images is a dict but has no entry for explainer(s) {missing}")
        out = {k: np.asarray(images[k], np.float32) for k in named}
    else:
        if layout not in LAYOUTS:
            raise OptionError(f"layout must be 'NCHW' or 'NHWC' (how images holds its channels); got {layout!r}")
        x = np.asarray(images, np.float32)
        if x.ndim != 4:
            raise InputError(f"images must be a batch (N, C, H, W) or (N, H, W, C) in layout={layout!r}; got shape "
                             f"{x.shape}")
        nchw = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
        out = {k: np.ascontiguousarray(nchw if ex.adapter.layout == "NCHW" else nchw.transpose(0, 2, 3, 1))
               for k, ex in named.items()}
    sizes = {k: v.shape[0] for k, v in out.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise InputError(f"every explainer needs the same, non-zero number of images; got {sizes}")
    return out


def _targets(targets, ref_outputs: np.ndarray) -> np.ndarray | None:
    """One class per image: the reference model's top-1 (None), one int for all, or one per image;
    'own' leaves each model on its own top-1 (returns None)."""
    n = ref_outputs.shape[0]
    if isinstance(targets, str):
        if targets != "own":
            raise OptionError(f"targets is None (the first model's top-1), 'own' (each model's own top-1), an int or "
                              f"one int per image; got {targets!r}")
        return None
    if targets is None:
        return ref_outputs.argmax(1).astype(np.int64)
    t = np.asarray(targets)
    if t.ndim == 0:
        t = np.full(n, int(t))
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise InputError(f"targets must be an int or {n} ints (one per image); got {targets!r}")
    return t.astype(np.int64)


def _same_size(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A heatmap batch at ``size`` (models fed at other sizes are resized bilinearly to the first one's)."""
    if heat.shape[1:] == tuple(size):
        return heat
    from agnostic_cam.core.imaging import resize_bilinear

    return np.clip(resize_bilinear(heat, size), 0, 1)


def compare(explainers, images, methods: str | Sequence[str] | None = "gradcam", targets: Any = None, *,
            layout: str = "NCHW", top: float = 0.1, options: Mapping[str, dict] | None = None,
            image_names: Sequence[str] | None = None) -> Comparison:
    """Explain ``images`` with every explainer and measure how far each pair's heatmaps are apart.

    explainers: a list of Explainers (named by framework: ``torch``, ``keras``, ``onnx``, ``onnx-2``...)
    or a dict name -> Explainer; the first is the reference.
    images: float batch in ``layout`` ('NCHW' default, or 'NHWC'), transposed for each explainer to its
    own input layout; or a dict name -> batch already in that explainer's layout (models with their
    own preprocessing).
    methods: a name, a list, or None for every method all the explainers can run.
    targets: None explains the reference model's top-1 class in every model (so the maps answer the
    same question); an int or one int per image; 'own': each model its own top-1.
    top: the share of pixels whose overlap (IoU) is measured (default 0.1, the top 10%).
    options: per-method options, e.g. ``{"scorecam": {"batch_size": 64}}``.
    Returns a :class:`~agnostic_cam.compare.result.Comparison`.
    """
    named = name_explainers(explainers)
    top = check_top(top)
    xs = inputs_for(named, images, layout)
    names = list(named)
    avail = {k: set(ex.methods) for k, ex in named.items()}  # ex.methods is worked out on each call
    common = sorted(set.intersection(*avail.values()))
    methods = common if methods is None else [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise OptionError("no method to compare: pass methods=[...] (see ex.methods)")
    for m in methods:
        lacking = [k for k in named if m not in avail[k]]
        if lacking:
            raise OptionError(f"method {m!r} cannot run on {lacking}; methods every explainer runs: {', '.join(common)}")
    outputs = {k: np.asarray(ex.predict(xs[k]), np.float64) for k, ex in named.items()}
    tgt = _targets(targets, outputs[names[0]])
    n = xs[names[0]].shape[0]
    explanations, seconds = {}, {}
    for m in methods:
        opts = dict((options or {}).get(m, {}))
        explanations[m], seconds[m] = {}, {}
        for k, ex in named.items():
            t0 = time.perf_counter()
            explanations[m][k] = ex.explain(xs[k], m, target=None if tgt is None else tgt, **opts)
            seconds[m][k] = time.perf_counter() - t0
    size = explanations[methods[0]][names[0]].heatmap.shape[1:]
    heat = {m: {k: _same_size(e.heatmap, size) for k, e in by.items()} for m, by in explanations.items()}
    top1 = {k: o.argmax(1).astype(np.int64) for k, o in outputs.items()}
    rows = []
    for m in methods:
        for a, b in itertools.combinations(names, 2):
            ea, eb = explanations[m][a], explanations[m][b]
            for i in range(n):
                row = {"method": m, "a": a, "b": b, "image": i, **map_measures(heat[m][a][i], heat[m][b][i], top),
                       "target_a": None if ea.targets is None else int(ea.targets[i]),
                       "target_b": None if eb.targets is None else int(eb.targets[i]),
                       "top1_a": int(top1[a][i]), "top1_b": int(top1[b][i]),
                       "top1_agree": bool(top1[a][i] == top1[b][i]),
                       "score_a": float(ea.scores[i]), "score_b": float(eb.scores[i]),
                       "score_diff": float(abs(float(ea.scores[i]) - float(eb.scores[i])))}
                rows.append(row)
    return Comparison(names=names, methods=methods, rows=rows, explanations=explanations, heatmaps=heat,
                      images=xs[names[0]], outputs=outputs, seconds=seconds, top=top,
                      image_names=[str(s) for s in image_names] if image_names is not None else
                      [f"image {i}" for i in range(n)],
                      layers={k: ex.layer for k, ex in named.items()})
