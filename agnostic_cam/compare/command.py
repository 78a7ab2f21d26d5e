"""``agnostic-cam compare A B [C ...] IMAGES --out DIR``: the comparison of a folder of images,
with the audit's guarantees: atomic writes, resume, typed errors and the same exit codes.

Under ``OUT``: ``.compare/<key>.json`` is one image's record (its rows for every method and pair,
the run's fingerprint, the image's content hash), ``overlays/<stem>.png`` its strip (a row per
method: the image, then each model's overlay). The strip is written before the record, each
atomically; a rerun reuses a record whose fingerprint (models, settings) and content hash match
and whose strip exists. ``compare.csv``, ``results.json`` and ``report.html`` are written from the
records at the end, and after Ctrl-C from those done so far (then ``KeyboardInterrupt`` goes on).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np

from agnostic_cam.audit.files import atomic_write, check_writable, display
from agnostic_cam.audit.sources import list_images, read_bytes
from agnostic_cam.compare import models as M
from agnostic_cam.compare.figure import image_strip
from agnostic_cam.compare.measures import aggregate
from agnostic_cam.compare.result import COLUMNS, Comparison, pair_name
from agnostic_cam.compare.run import compare
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.inputs.image_files import read_image, resize_rgb

log = logging.getLogger("agnostic_cam.compare")
STATE = ".compare"


def _preprocess(explainers: dict, size):
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


def run_compare(specs: list[str], images, out, methods: str | list[str] = "gradcam", *, layer: str | None = None,
                size=None, target: int | None = None, top: float = 0.1, resume: bool = True,
                batch_images: int = 8, walk: bool = False, tol: float = 1e-3, follow_symlinks: bool = False,
                explainers: dict | None = None) -> dict:
    """Compare the models ``specs`` (see :mod:`agnostic_cam.compare.models`) on the images of
    ``images`` (a folder, a folder tree or a .txt/.csv list); writes report.html, compare.csv and
    results.json to ``out`` and returns results.json's content. ``walk``: with two models, also the
    layer walk (on the first ``batch_images`` images). ``explainers``: {name: Explainer} already built
    from ``specs`` (names then come from its keys)."""
    methods = [m.strip() for m in methods.split(",") if m.strip()] if isinstance(methods, str) else list(methods)
    if len(specs) < 2:
        raise OptionError(f"compare needs at least two models; got {len(specs)}")
    out = Path(out)
    try:
        check_writable(out)
    except OSError as e:
        raise OptionError(str(e)) from None
    names = list(explainers) if explainers else M.short_names(specs)
    exs = explainers or {n: M.load_explainer(s, layer) for n, s in zip(names, specs)}
    avail = {k: set(ex.methods) for k, ex in exs.items()}
    for m in methods:
        lacking = [k for k in exs if m not in avail[k]]
        if lacking:
            raise OptionError(f"method {m!r} cannot run on {lacking}; see `agnostic-cam compare --help` for the list")
    pre = _preprocess(exs, size)
    settings = {"methods": methods, "layer": layer, "size": list(next(iter(pre.values())).size), "target": target,
                "top": top}
    fp = hashlib.blake2b(json.dumps([[M.fingerprint(s) for s in specs], names, settings]).encode(),
                         digest_size=16).hexdigest()
    items, refused = list_images(images, follow_symlinks)
    size = tuple(settings["size"])
    (out / STATE).mkdir(exist_ok=True)
    (out / "overlays").mkdir(exist_ok=True)
    records, failed, computed, reused = {}, list(refused), [], []
    pending = []
    for it in items:
        try:
            data = read_bytes(it)
        except InputError as e:
            failed.append({"file": it.file, "error": str(e)})
            continue
        sha = hashlib.blake2b(data, digest_size=16).hexdigest()
        rec = _cached(out, it, sha, fp) if resume else None
        if rec is not None:
            records[it.key] = rec
            reused.append(it.file)
        else:
            pending.append((it, sha, data))
    interrupted = False
    walk_result = None
    try:
        for lo in range(0, len(pending), batch_images):
            batch, rgbs = [], []
            for it, sha, data in pending[lo:lo + batch_images]:
                try:
                    rgbs.append(resize_rgb(read_image(data, name=it.file), size))
                    batch.append((it, sha))
                except InputError as e:
                    failed.append({"file": it.file, "error": str(e)})
            if not batch:
                continue
            xs = {k: p.to_batch(rgbs) for k, p in pre.items()}
            res = compare(exs, xs, methods, target, top=top, image_names=[it.file for it, _ in batch])
            if walk and walk_result is None and len(exs) == 2:
                from agnostic_cam.compare.walk import walk_layers

                walk_result = walk_layers(exs, xs, tol=tol).to_dict()
            for i, (it, sha) in enumerate(batch):
                rec = _record(res, i, it, sha, fp, rgbs[i])
                atomic_write(out / rec["strip"], _png(image_strip(rgbs[i], {m: {k: h[i:i + 1][0] for k, h in by.items()}
                                                                            for m, by in res.heatmaps.items()},
                                                                   methods, list(exs))))
                atomic_write(out / STATE / f"{it.key}.json", json.dumps(rec))
                records[it.key] = rec
                computed.append(it.file)
    except KeyboardInterrupt:
        interrupted = True
    order = [it.key for it in items if it.key in records]
    results = _results(list(exs), methods, settings, [records[k] for k in order], failed, computed, reused,
                       interrupted, len(items) + len(refused), walk_result,
                       {k: ex.layer for k, ex in exs.items()}, [display(str(s)) for s in specs])
    write_outputs(results, out)
    if interrupted:
        raise KeyboardInterrupt(f"interrupted after {len(records)} images; the report of those is in {out}; rerun "
                                "the same command to resume")
    return results


def _cached(out: Path, it, sha: str, fp: str) -> dict | None:
    try:
        rec = json.loads((out / STATE / f"{it.key}.json").read_text())
    except (OSError, ValueError):
        return None
    ok = rec.get("fingerprint") == fp and rec.get("sha") == sha and rec.get("rel") == it.file
    return rec if ok and (out / rec.get("strip", "")).is_file() else None


def _record(res: Comparison, i: int, it, sha: str, fp: str, rgb) -> dict:
    rows = [{k: v for k, v in r.items() if k != "image"} for r in res.rows if r["image"] == i]
    rows = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    return {"fingerprint": fp, "sha": sha, "rel": it.file, "file": it.file, "key": it.key, "rows": rows,
            "strip": f"overlays/{it.stem}.png", "disagreement": float(res.disagreement()[i])}


def _results(names, methods, settings, records, failed, computed, reused, interrupted, total, walk, layers,
             specs) -> dict:
    by: dict = {}
    for rec in records:
        for r in rec["rows"]:
            by.setdefault(r["method"], {}).setdefault(pair_name(r["a"], r["b"]), []).append(r)
    summary = {m: {p: aggregate(rs) for p, rs in pairs.items()} for m, pairs in by.items()}
    worst = sorted(records, key=lambda r: (-r["disagreement"], r["file"]))
    rows = [{c: (rec["file"] if c in ("image", "name") else r.get(c)) for c in COLUMNS} for rec in records
            for r in rec["rows"]]
    return {"models": names, "files": specs, "layers": layers, "methods": methods, "settings": settings,
            "summary": summary, "worst_images": [{"file": r["file"], "disagreement": r["disagreement"],
                                                  "strip": r["strip"]} for r in worst],
            "rows": rows, "walk": walk,
            "run": {"explained": len(records), "failed": failed, "computed": computed, "reused": reused,
                    "interrupted": interrupted, "total": total}}


def write_outputs(results: dict, out: Path) -> None:
    """compare.csv, results.json and report.html, each atomically."""
    from agnostic_cam.compare.report import csv_text, render_compare_report

    atomic_write(out / "compare.csv", csv_text(results["rows"]))
    atomic_write(out / "results.json", json.dumps(finite(results), indent=1, allow_nan=False))
    atomic_write(out / "report.html", render_compare_report(results, out))


def finite(obj):
    """``obj`` with every NaN / infinite float as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
