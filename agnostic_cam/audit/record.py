"""The per-image record: what is computed for an image, its fingerprint, where its files go.

Every engine calls :func:`load` then :func:`compute_records` and gets the same records. A record
is a JSON-able dict::

    {"file", "rel", "key", "sha", "fingerprint", "class", "label", "true_label", "score",
     "probability", "input": "overlays/<stem>__input.png",
     "methods": {method: {"deletion_auc", "insertion_auc", "drop_pct", "increase", "pointing_hit",
                          "seconds", "overlay": "overlays/<stem>__<method>.png"}}}

or, for an image that cannot be used, ``{"file", "rel", "key", "sha", "fingerprint", "error"}``.
The PNG files come back as bytes beside the record (``files``); the engine never writes them, the
:class:`~agnostic_cam.audit.store.Store` does, so records can be computed anywhere (Ray workers).
"""
from __future__ import annotations

import hashlib
import io
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from agnostic_cam.evaluation import metrics
from agnostic_cam.audit.scoring import score_maps
from agnostic_cam.audit.sources import Item, read_bytes
from agnostic_cam.core.degenerate import DegenerateMapWarning
from agnostic_cam.errors import InputError, NonFiniteError


@dataclass
class Loaded:
    """An image read and preprocessed (``rgb`` (H, W, 3) 0-255 at the model's size), or its ``error``.
    ``display``: the image at its own aspect ratio (longer side at most DISPLAY_MAX) for the overlays."""

    item: Item
    sha: str | None = None
    rgb: np.ndarray | None = None
    error: str | None = None
    display: np.ndarray | None = None
    size: tuple[int, int] | None = None  # (H, W) of the image file, before resizing


DISPLAY_MAX = 512  # longer side of the overlay PNGs (images are shown at their own aspect ratio)


@dataclass
class Result:
    """A record and the files (relative path -> PNG bytes) that go with it."""

    record: dict
    files: dict[str, bytes] = field(default_factory=dict)


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def load(ctx, item: Item, data: bytes | None = None) -> Loaded:
    """Read, hash and preprocess one image; a file that cannot be used gives ``Loaded.error``."""
    from agnostic_cam.inputs.image_files import read_image, resize_rgb

    try:
        data = read_bytes(item) if data is None else data
        sha = content_hash(data)
    except InputError as e:
        return Loaded(item, error=str(e))
    try:
        rgb = read_image(data, ctx.cfg.max_pixels, name=item.file)
        display, size = display_copy(rgb), tuple(rgb.shape[:2])
        if ctx.pre.size is not None:
            rgb = resize_rgb(rgb, ctx.pre.size)
        else:
            check_size(ctx, item, rgb)
    except InputError as e:
        return Loaded(item, sha, error=str(e))
    return Loaded(item, sha, rgb, display=display, size=size)


def display_copy(rgb: np.ndarray, longest: int = DISPLAY_MAX) -> np.ndarray:
    """(h, w, 3) uint8 with the image's aspect ratio, the longer side at most ``longest``."""
    from agnostic_cam.inputs.image_files import resize_rgb, to_uint8

    h, w = rgb.shape[:2]
    f = min(1.0, longest / max(h, w))
    return to_uint8(resize_rgb(rgb, (max(1, round(h * f)), max(1, round(w * f))))) if f < 1 else to_uint8(rgb)


def overlay_at(display: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A heatmap (H, W) at the model's input size blended over ``display`` (h, w, 3) at its own size."""
    from agnostic_cam.core.imaging import resize_bilinear
    from agnostic_cam.render.figures import overlay

    return overlay(display[None], np.clip(resize_bilinear(heat[None], display.shape[:2]), 0, 1))[0]


def check_size(ctx, item: Item, rgb: np.ndarray) -> None:
    """With no resize rule, an image must have the model's fixed input size (InputError otherwise)."""
    sp = ctx.ex.adapter.spatial
    if sp is not None and None not in sp and tuple(rgb.shape[:2]) != tuple(sp):
        raise InputError(f"image {item.file!r} is {rgb.shape[0]}x{rgb.shape[1]} but the model takes {tuple(sp)}; "
                         "Resize it (drop --size none / size=None)")


def failed(ctx, loaded: Loaded) -> Result:
    it = loaded.item
    return Result({"file": it.file, "rel": it.rel, "key": it.key, "sha": loaded.sha, "fingerprint": ctx.fingerprint,
                   "error": loaded.error})


def compute_records(ctx, batch: list[Loaded]) -> list[Result]:
    """Records of ``batch`` (loaded images, errors included), computed together.

    Images of one shape are explained and scored in one batch (one ONNX Runtime call per curve
    chunk for all of them). An :class:`InputError` raised for a batch is retried image by image,
    so it fails only the image it belongs to; any other error stops the audit.
    """
    results: dict[int, Result] = {i: failed(ctx, b) for i, b in enumerate(batch) if b.error is not None}
    groups: dict[tuple, list[int]] = {}
    for i, b in enumerate(batch):
        if b.error is None:
            groups.setdefault(b.rgb.shape, []).append(i)
    for idx in groups.values():
        try:
            for i, res in zip(idx, _compute(ctx, [batch[i] for i in idx])):
                results[i] = res
        except InputError as e:
            if len(idx) == 1:
                batch[idx[0]].error = str(e)
                results[idx[0]] = failed(ctx, batch[idx[0]])
                continue
            for i in idx:  # find the culprit
                results[i] = compute_records(ctx, [batch[i]])[0]
    return [results[i] for i in range(len(batch))]


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _encode(display: np.ndarray, heat: np.ndarray | None = None) -> bytes:
    """PNG bytes of ``display``, or of ``heat`` blended over it."""
    return _png(display if heat is None else overlay_at(display, heat))


def _submitter(ctx):
    """``submit(fn, *args) -> Future``: on the engine's thread pool (``ctx.pool``, so PNG encoding
    overlaps the curves' ONNX Runtime calls), or run at once when the engine has no pool."""
    pool = getattr(ctx, "pool", None)
    if pool is not None:
        return pool.submit

    def now(fn, *args) -> Future:
        f: Future = Future()
        f.set_result(fn(*args))
        return f

    return now


def predict_batch(ctx, batch: list[Loaded]) -> tuple[np.ndarray, np.ndarray]:
    """(model input of ``batch``, the model's outputs float64), NonFiniteError on NaN/Inf outputs."""
    x = ctx.ex.adapter.prepare(ctx.pre.to_batch([b.rgb for b in batch]))
    out = np.asarray(ctx.ex.predict(x), np.float64)
    if not np.isfinite(out).all():
        raise NonFiniteError(f"the model's output is NaN/Inf on {batch[0].item.file!r} (a finite image): the model "
                             "itself produces non-finite numbers (check its weights)", where="model output")
    return x, out


def _compute(ctx, batch: list[Loaded]) -> list[Result]:
    from agnostic_cam.inputs.image_files import to_uint8

    if getattr(ctx, "task_compute", None) is not None:  # --task segment / detect (audit/task_records.py)
        return ctx.task_compute(ctx, batch)
    ex, cfg, n = ctx.ex, ctx.cfg, len(batch)
    submit = _submitter(ctx)
    from agnostic_cam.audit import embedded

    own = None
    if embedded.EMBEDDED in cfg.methods:  # the model's own map, from the same forward pass
        x, out, own = embedded.predict(ctx, batch)
    else:
        x, out = predict_batch(ctx, batch)
    ks = out.argmax(axis=1) if cfg.target is None else np.full(n, cfg.target)
    probs = out if ctx.score == "raw" else metrics.softmax(out)
    shown = [b.display if b.display is not None else to_uint8(b.rgb) for b in batch]
    results = []
    for j, b in enumerate(batch):
        it, k = b.item, int(ks[j])
        rec = {"file": it.file, "rel": it.rel, "key": it.key, "sha": b.sha, "fingerprint": ctx.fingerprint,
               "task": "classify", "target": f"class {k}", "class": k, "label": ctx.label(k), "true_label": it.true_label, "score": float(out[j, k]),
               "probability": float(probs[j, k]), "input": f"overlays/{it.stem}__input.png", "methods": {}}
        results.append(Result(rec, {rec["input"]: submit(_encode, shown[j])}))
    heats, overlays, secs, degenerate = {}, {}, {}, {}
    for method in cfg.methods:
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # degenerate maps are counted in the report instead
            warnings.simplefilter("ignore", DegenerateMapWarning)
            e = own if method == embedded.EMBEDDED else ex.explain(x, method, target=ks)
        heats[method] = e.heatmap
        overlays[method] = [submit(_encode, shown[j], e.heatmap[j]) for j in range(n)]
        degenerate[method] = None if e.degenerate is None else [str(r) for r in e.degenerate_reason]
        secs[method] = time.perf_counter() - t0
        step = getattr(ctx, "on_step", None)  # progress inside a batch: one tick per method (local engine)
        if step is not None:
            step([b.item.key for b in batch], method)
    t0 = time.perf_counter()
    scores = score_maps(ex, x, out, heats, ks, cfg.steps, ex.adapter.layout, ctx.score)
    share = (time.perf_counter() - t0) / len(cfg.methods)
    for method in cfg.methods:
        sc = scores[method]
        for j, res in enumerate(results):
            box = cfg.boxes.get(res.record["rel"], cfg.boxes.get(res.record["file"]))
            name = f"overlays/{batch[j].item.stem}__{method.replace('+', 'p')}.png"
            drop = float(100 * sc["drop"][j])
            res.record["methods"][method] = {
                "deletion_auc": float(sc["deletion_auc"][j]), "insertion_auc": float(sc["insertion_auc"][j]),
                "drop_pct": None if np.isnan(drop) else drop, "increase": float(sc["increase"][j]),
                "pointing_hit": None if box is None else float(metrics.pointing_game(heats[method][j:j + 1], [box])[0]),
                "seconds": round((secs[method] + share) / n, 4), "overlay": name,
                "degenerate": "" if degenerate[method] is None else degenerate[method][j]}
            res.files[name] = overlays[method][j]
    for res in results:  # the encoded PNGs (an encoding error is raised here, as it would be inline)
        res.files = {k: f.result() for k, f in res.files.items()}
    return results
