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
import json
import logging
from pathlib import Path

import numpy as np

from agnostic_cam.audit.files import atomic_write, check_writable, display
from agnostic_cam.audit.sources import list_images, read_bytes
from agnostic_cam.compare import batch as B
from agnostic_cam.compare import models as M
from agnostic_cam.compare.measures import aggregate
from agnostic_cam.compare.result import COLUMNS, pair_name
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.methods import get_method

log = logging.getLogger("agnostic_cam.compare")
STATE = ".compare"


def run_compare(specs: list[str], images, out, methods: str | list[str] = "gradcam", *, layer: str | None = None,
                size=None, target: int | None = None, top: float = 0.1, resume: bool = True,
                batch_images: int = 8, walk: bool = False, tol: float = 1e-3, follow_symlinks: bool = False,
                explainers: dict | None = None, engine: str = "local", workers: int | None = None,
                address: str | None = None) -> dict:
    """Compare the models ``specs`` (see :mod:`agnostic_cam.compare.models`) on the images of
    ``images`` (a folder, a folder tree or a .txt/.csv list); writes report.html, compare.csv and
    results.json to ``out`` and returns results.json's content. ``walk``: with two models, also the
    layer walk (on the first ``batch_images`` images). ``explainers``: {name: Explainer} already built
    from ``specs`` (names then come from its keys). ``engine``: 'local' (this process) or 'ray'
    (``workers`` Ray actors, each loading the models from ``specs``, on the cluster at ``address``
    or a local Ray)."""
    methods = [m.strip() for m in methods.split(",") if m.strip()] if isinstance(methods, str) else list(methods)
    if len(specs) < 2:
        raise OptionError(f"compare needs at least two models; got {len(specs)}")
    if engine not in ("local", "ray"):
        raise OptionError(f"unknown engine {engine!r}; choose local or ray")
    for m in methods:
        get_method(m)  # an unknown name is an OptionError (with the known names) before any model is loaded
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
    pre = B.preprocessors(exs, size)
    settings = {"methods": methods, "layer": layer, "size": list(next(iter(pre.values())).size), "target": target,
                "top": top}
    fp = hashlib.blake2b(json.dumps([[M.fingerprint(s) for s in specs], names, settings]).encode(),
                         digest_size=16).hexdigest()
    job = B.Job(tuple(methods), target, top, tuple(settings["size"]), fp)
    items, refused = list_images(images, follow_symlinks)
    (out / STATE).mkdir(exist_ok=True)
    (out / "overlays").mkdir(exist_ok=True)
    records, failed, computed, reused, pending = {}, list(refused), [], [], []
    for it in items:
        try:
            sha = B.content_hash(read_bytes(it))
        except InputError as e:
            failed.append({"file": it.file, "error": str(e)})
            continue
        rec = _cached(out, it, sha, fp) if resume else None
        if rec is not None:
            records[it.key] = rec
            reused.append(it.file)
        else:
            pending.append(B.Entry(it.path, it.file, it.key, it.stem))
    walk_result = _walk(exs, pre, job, items, batch_images, tol) if walk and len(exs) == 2 else None
    interrupted = False
    try:
        if engine == "ray":
            from agnostic_cam.compare.ray_engine import run_ray

            results = run_ray({"specs": list(specs), "names": names, "layer": layer, "job": job}, pending,
                              batch_images, workers, address)
        else:
            results = (r for lo in range(0, len(pending), batch_images)
                       for r in B.compute_batch(job, exs, pre, pending[lo:lo + batch_images]))
        for r in results:
            if "failed" in r:
                failed.append(r["failed"])
                continue
            rec = r["record"]
            atomic_write(out / rec["strip"], r["png"])
            atomic_write(out / STATE / f"{rec['key']}.json", json.dumps(rec))
            records[rec["key"]] = rec
            computed.append(rec["file"])
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


def _walk(exs: dict, pre: dict, job, items, n: int, tol: float) -> dict | None:
    """The layer walk on the first ``n`` usable images (None when none can be read)."""
    from agnostic_cam.compare.walk import walk_layers

    rgbs = []
    for it in items:
        try:
            rgbs.append(B.load_rgb(B.Entry(it.path, it.file, it.key, it.stem), job.size)[0])
        except InputError:
            continue
        if len(rgbs) == n:
            break
    if not rgbs:
        return None
    return walk_layers(exs, {k: p.to_batch(rgbs) for k, p in pre.items()}, tol=tol).to_dict()


def _cached(out: Path, it, sha: str, fp: str) -> dict | None:
    try:
        rec = json.loads((out / STATE / f"{it.key}.json").read_text())
    except (OSError, ValueError):
        return None
    ok = rec.get("fingerprint") == fp and rec.get("sha") == sha and rec.get("rel") == it.file
    return rec if ok and (out / rec.get("strip", "")).is_file() else None


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
