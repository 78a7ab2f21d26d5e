"""One audit run: list images -> checks done once -> reuse finished records -> an engine computes
the rest -> result files. Engines are interchangeable; resume works across runs and engines.

Memory does not grow with the number of images beyond a small entry per image name: records go to
the store as they arrive and the result files are written from it, one record at a time.

Faults: an image that cannot be used (unreadable, a bomb, a wrong size) is listed as failed and
the run goes on; anything that is not the image's fault (model, options, gradient backend) stops
the run before images run, as a typed error; a write failure (disk full) raises
:class:`~agnostic_cam.audit.files.OutputError` and leaves no temporary file; Ctrl-C writes the
report of the images done so far and re-raises ``KeyboardInterrupt`` (a rerun resumes).
"""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agnostic_cam.audit import record
from agnostic_cam.audit.context import AuditConfig, Context, ModelSpec, model_fingerprint, preflight
from agnostic_cam.audit.engines import get_engine
from agnostic_cam.audit.outputs import FORMATS, write_outputs
from agnostic_cam.audit.sources import Item, list_images, read_bytes
from agnostic_cam.audit.store import Store, StoredRecords
from agnostic_cam.audit.files import OutputError, check_writable
from agnostic_cam.errors import InputError, OptionError

log = logging.getLogger(__name__)


def run(model, images, out, methods="scorecam", *, engine: str = "local", workers: int | None = None,
        address: str | None = None, gpus_per_worker: float = 0, preprocess=None, layer: str | None = None,
        layout: str | None = None, output: str | None = None, input_name: str | None = None, providers=None,
        batch_size: int | None = None, steps: int = 20, target: int | None = None, boxes: dict | None = None,
        labels: list[str] | None = None, resume: bool = True, score: str = "auto", batch_images: int = 8,
        max_pixels: int | None = None, follow_symlinks: bool = False, format: str = "csv",
        report_images: int = 200, progress: bool | None = None, explainer=None, task: str = "classify",
        category: int | None = None, masks: str | os.PathLike | None = None, top_boxes: int | None = None,
        iou: float = 0.5, ground_truth: str | os.PathLike | None = None, metrics: list[str] | str | None = None,
        threshold: float = 0.5, present: dict | None = None) -> dict:
    """Audit ``images`` (a folder, a folder tree or a .txt/.csv list) with ``methods`` on ``model``
    (an .onnx path, or an Explainer for the local engine); writes results.json, metrics.csv (or
    metrics.parquet with ``format='parquet'``) and report.html to ``out``; returns the results
    (results.json's content; its ``images`` is a list of the records, or beyond ``IN_MEMORY_RECORDS``
    (20,000) a read-only sequence that reads each record from ``out`` when asked for, so a million of
    them are never all in memory: ``list()`` it to keep them).

    engine 'local' (this process) or 'ray' (Ray Data actors, ``workers`` of them, each with
    ``gpus_per_worker`` GPUs, on the cluster at ``address`` or a local Ray). ``explainer``: one
    already built from the ``model`` path with the same options (saves loading it twice). See the README
    section "Audit a million images" and docs/onnx-audit.md for every option.

    ``task``: 'classify' (default), 'segment' (``category`` K, optional ``masks`` folder) or 'detect'
    (``boxes`` {image: [{"box": [x1, y1, x2, y2], "label": k}]} or ``top_boxes`` N; ``iou``); see
    :mod:`agnostic_cam.audit.tasks`; 'multilabel': every class whose probability is >= ``threshold``, or
    the classes ``present`` names ({image name: [class, ...]}), scored per (image, class) row
    (:mod:`agnostic_cam.audit.multilabel`).

    ``ground_truth``: object boxes or masks to score the maps against (COCO JSON, or a YOLO, Pascal
    VOC or mask-image folder; :mod:`agnostic_cam.audit.ground_truth`). ``metrics``: the metric groups
    ('faithfulness', 'localisation', 'complexity'; default faithfulness, plus localisation with
    ground truth; :mod:`agnostic_cam.audit.localise`).
    """
    from agnostic_cam.audit.tasks import check_items, make_task
    from agnostic_cam.inputs.preprocess import Preprocess

    if format not in FORMATS:
        raise OptionError(f"format must be one of {FORMATS}; got {format!r}")
    if format == "parquet":  # before any image runs, not when the files are written
        from agnostic_cam.audit.engines.ray import require

        require("pyarrow.parquet", "--format parquet")
    if not isinstance(report_images, int) or report_images < 0:
        raise OptionError(f"report_images must be an int >= 0; got {report_images!r}")
    task_cfg = make_task(task, category, masks, boxes, top_boxes, iou, target,
                         ground_truth if task == "detect" else None, threshold, present)
    cfg = AuditConfig(methods, steps, target, {} if task_cfg else boxes or {}, labels, resume, score, batch_images,
                      max_pixels, follow_symlinks, task_cfg, ground_truth, metrics)
    engine_fn = get_engine(engine)
    try:
        check_writable(Path(out))
    except OutputError as e:
        raise OptionError(str(e)) from None
    items, refused = list_images(images, follow_symlinks, out=out)
    if isinstance(model, (str, os.PathLike)):
        spec = ModelSpec(os.fspath(model), layer, layout, output, input_name,
                         providers.split(",") if isinstance(providers, str) else providers, batch_size)
        model_hash, name = model_fingerprint(model), Path(model).name
        if task_cfg and task_cfg["task"] == "detect":
            from agnostic_cam.audit.detections import detector_spec

            spec = detector_spec(spec)
            explainer = explainer if spec.pack is None else None  # the packed graph is another model
        ex = explainer if explainer is not None else spec.build()
    else:
        ex, spec, name = model, None, "model"
        model_hash = hashlib.blake2b(ex.adapter.model.SerializeToString(), digest_size=16).hexdigest()
    pre = preprocess if isinstance(preprocess, Preprocess) else Preprocess.for_adapter(ex.adapter, **(preprocess or {}))
    ctx = Context(ex, pre, cfg, model_hash, spec)
    preflight(ctx)
    if pre.size is None:
        _check_sizes(ctx, items)
    check_items(ctx, items)
    store = Store(out, ctx.fingerprint, resume)
    header = {"model": name, "task": task_cfg["task"] if task_cfg else "classify", "layer": ex.layer, "layout": ex.adapter.layout, "score": ctx.score,
              "engine": {"name": engine, "workers": workers, "address": address, "gpus_per_worker": gpus_per_worker},
              "settings": ctx.settings, "fingerprint": ctx.fingerprint}
    from agnostic_cam.audit.localise import forward_passes

    log.info("metrics: %s; %d forward passes per image for them (plus each method's own)",  # the CLI prints it
             ", ".join(cfg.metrics), forward_passes(cfg.metrics, len(cfg.methods), cfg.steps))
    return _execute(ctx, store, items, refused, engine_fn, header, format, report_images, progress,
                    {"workers": workers, "address": address, "gpus_per_worker": gpus_per_worker})


def _check_sizes(ctx: Context, items: list[Item]) -> None:
    """--size none with a fixed-size model: every image must have that size (read from headers)."""
    from PIL import Image

    sp = ctx.ex.adapter.spatial
    if sp is None or None in sp:
        return
    for it in items:
        try:
            with Image.open(it.path) as im:
                hw = (im.size[1], im.size[0])
        except Exception:  # noqa: BLE001 - unreadable files fail later, as that image's failure
            continue
        if hw != tuple(sp):
            raise OptionError(f"no resize rule (size none) but {it.file!r} is {hw[0]}x{hw[1]} and the model takes "
                              f"{sp[0]}x{sp[1]}; drop --size none (size=None) to resize, or resize the images")


REUSED, COMPUTED = 0, 1  # how each finished image was obtained (_execute's `done`)
# run()'s results['images'] is a plain list up to this many records (about 1 KB each), beyond it a
# StoredRecords view that reads each record from OUT/.audit when asked for
IN_MEMORY_RECORDS = 20_000


def _scan(store: Store, items: list[Item]) -> tuple[dict[str, int], dict[str, str], list[Item]]:
    """(REUSED for each image with a reusable record by key, the errors among those by key, items to
    compute), hashing file contents in a thread pool. Records are not kept: the store has them."""
    def one(it: Item):
        try:
            rec = store.cached(it, record.content_hash(read_bytes(it)))
        except InputError:
            return it, None, None
        return it, rec is not None, None if rec is None else rec.get("error")

    done: dict[str, int] = {}
    errors: dict[str, str] = {}
    if not store.resume:
        return done, errors, list(items)
    todo = []
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for it, ok, error in pool.map(one, items):
            if not ok:
                todo.append(it)
                continue
            done[it.key] = REUSED
            if error is not None:
                errors[it.key] = error
    return done, errors, todo


def _execute(ctx, store, items, refused, engine_fn, header, fmt, report_images, progress, options) -> dict:
    """Run the engine on the images not reused, then write the result files. Memory holds one small
    entry per image key (how it was obtained) and the errors, never the records: the result files
    are written from the store's records read back one at a time, in image order."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    done, errors, todo = _scan(store, items)
    interrupted = False
    sigint = _SigintSeen()
    try:
        with tqdm(total=len(items), initial=len(done), desc="Audit", unit="img",
                  disable=None if progress is None else not progress,
                  bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}{postfix}]") as bar:
            ctx.on_step = method_ticks(bar, len(ctx.cfg.methods))
            for res in engine_fn(ctx, todo, **options):
                key = res.record["key"]
                if key in done:  # a retried worker may deliver an image twice: keep the first
                    continue
                store.save(res)
                done[key] = COMPUTED
                if "error" in res.record:
                    errors[key] = res.record["error"]
                bar.update(max(0.0, 1.0 - ctx.on_step.credit.pop(key, 0.0)))
    except KeyboardInterrupt:
        interrupted = True
    except Exception:  # a library may turn Ctrl-C into another error (numpy does): still an interrupt
        if not sigint.seen:
            raise
        interrupted = True
    finally:
        ctx.on_step = None
        sigint.restore()
    how = [done.get(it.key) for it in items]  # in image order
    failed = list(refused) + [{"file": it.file, "error": errors[it.key]} for it in items if it.key in errors]
    run = {"computed": [it.file for it, h in zip(items, how) if h == COMPUTED],
           "reused": [it.file for it, h in zip(items, how) if h == REUSED], "interrupted": interrupted,
           "total": len(items), "seconds": round(time.perf_counter() - t0, 3)}
    ok = [it.key for it, h in zip(items, how) if h is not None and it.key not in errors]
    results = write_outputs(store.out, {**header, "run": run}, StoredRecords(store, ok), failed,
                            ctx.cfg.methods, fmt, report_images)
    shown = results.get("images")  # StoredRecords, or a multi-label audit's rows of them (audit/multilabel.py)
    stored = getattr(shown, "records", shown)
    if isinstance(stored, StoredRecords) and len(stored) <= IN_MEMORY_RECORDS:
        results["images"] = list(shown)  # a plain list (JSON-serialisable) while it is small
    if interrupted:
        raise AuditInterrupted(len(done), len(items), store.out)
    return results


def method_ticks(bar, n_methods: int):
    """A callback ``(image keys, method)`` that moves ``bar`` by a share of an image per method done,
    so a slow image (Score-CAM on a large layer) shows progress; ``.credit`` keeps what each image got."""
    credit: dict[str, float] = {}

    def tick(keys: list[str], method: str) -> None:
        moved = 0.0
        for k in keys:
            add = min(1.0 / n_methods, 1.0 - credit.get(k, 0.0))
            credit[k] = credit.get(k, 0.0) + add
            moved += add
        bar.set_postfix_str(f"{method} done on {len(keys)} image(s)", refresh=False)
        bar.update(moved)

    tick.credit = credit  # type: ignore[attr-defined]
    return tick


class _SigintSeen:
    """Notes that Ctrl-C (SIGINT) arrived, then raises KeyboardInterrupt as Python does; only in the
    main thread, where signal handlers live. ``restore()`` puts the previous handler back."""

    def __init__(self):
        self.seen, self._old = False, None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            if self._old is signal.default_int_handler:
                signal.signal(signal.SIGINT, self._handler)
            else:
                self._old = None

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


class AuditInterrupted(KeyboardInterrupt):
    """Ctrl-C during an audit: the report of the ``done`` images is written; a rerun resumes."""

    def __init__(self, done: int, total: int, out: Path):
        super().__init__(f"interrupted after {done} of {total} images; report of those written to {out}. "
                         "Rerun the same command to resume")
        self.done, self.total, self.out = done, total, out
