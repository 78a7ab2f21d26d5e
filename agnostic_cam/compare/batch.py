"""One batch of the ``compare`` command: read the images, preprocess them for each model, compare,
and return each image's record and strip PNG (or why it could not be used). The local engine and
the Ray workers both call :func:`compute_batch`, so their records are the same."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

from agnostic_cam.compare.figure import image_strip
from agnostic_cam.compare.run import compare
from agnostic_cam.errors import InputError, OptionError


@dataclass(frozen=True)
class Job:
    """What every batch needs besides the explainers (plain values: it travels to Ray workers)."""

    methods: tuple
    target: int | None
    top: float
    size: tuple
    fingerprint: str


@dataclass(frozen=True)
class Entry:
    """One image to compare: its ``path``, shown name ``file``, record ``key`` and strip ``stem``."""

    path: str
    file: str
    key: str
    stem: str


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def preprocessors(explainers: dict, size=None) -> dict:
    """Each model's Preprocess (its own layout; one size for all: ``size`` or the first fixed one)."""
    from agnostic_cam.inputs.preprocess import Preprocess

    if size is None:
        size = next((tuple(ex.adapter.spatial) for ex in explainers.values() if ex.adapter.spatial is not None
                     and None not in ex.adapter.spatial), None)
    if size is None:
        raise OptionError("no model has a fixed input size: pass --size H,W")
    return {k: Preprocess.for_adapter(ex.adapter, size=tuple(size)) for k, ex in explainers.items()}


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _finite(v):
    return None if isinstance(v, float) and not np.isfinite(v) else v


def load_rgb(entry: Entry, size: tuple) -> tuple[np.ndarray, str]:
    """(the image resized to ``size`` as RGB, its content hash); InputError when it cannot be used."""
    from agnostic_cam.inputs.image_files import read_image, resize_rgb

    try:
        with open(entry.path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"cannot read image {entry.file!r}: {e.strerror or e}") from None
    return resize_rgb(read_image(data, name=entry.file), size), content_hash(data)


def compute_batch(job: Job, explainers: dict, pre: dict, entries: list[Entry]) -> list[dict]:
    """Per entry ``{"record": ..., "png": strip bytes}``, or ``{"failed": {"file", "error"}}``."""
    out, ok, rgbs, shas = [], [], [], []
    for e in entries:
        try:
            rgb, sha = load_rgb(e, job.size)
        except InputError as err:
            out.append({"failed": {"file": e.file, "error": str(err)}})
            continue
        ok.append(e)
        rgbs.append(rgb)
        shas.append(sha)
    if not ok:
        return out
    xs = {k: p.to_batch(rgbs) for k, p in pre.items()}
    res = compare(explainers, xs, list(job.methods), job.target, top=job.top, image_names=[e.file for e in ok])
    dis = res.disagreement()
    names = list(explainers)
    for i, e in enumerate(ok):
        rows = [{k: _finite(v) for k, v in r.items() if k != "image"} for r in res.rows if r["image"] == i]
        heat = {m: {k: h[i] for k, h in by.items()} for m, by in res.heatmaps.items()}
        rec = {"fingerprint": job.fingerprint, "sha": shas[i], "rel": e.file, "file": e.file, "key": e.key,
               "rows": rows, "strip": f"overlays/{e.stem}.png", "disagreement": float(dis[i])}
        out.append({"record": rec, "png": _png(image_strip(rgbs[i], heat, list(job.methods), names))})
    return out
