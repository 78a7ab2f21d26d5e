"""The Ray engine: a Ray Data pipeline of image names -> actors that each hold one Explainer
(one ONNX Runtime session, CUDA when the worker has a GPU) -> records streamed back to the driver.

Each actor rebuilds the audit's :class:`~agnostic_cam.audit.context.Context` from its spec and
calls the same :func:`~agnostic_cam.audit.record.load` / ``compute_records`` as the local engine,
so the records are the same. The driver writes files and records as they arrive and keeps none
(the pipeline streams; memory is bounded by Ray Data's backpressure, not by the number of images;
the result files are then written from the store one record at a time, see audit/outputs.py). A worker
that dies is restarted and its batch retried by Ray; an image delivered twice is kept once, and
an image lost with the driver is picked up by the next run's resume. Needs the ``[ray]`` extra.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
from collections.abc import Iterable, Iterator

from agnostic_cam.audit import record
from agnostic_cam.engine.threads import blas_one_thread
from agnostic_cam.audit.sources import Item
from agnostic_cam.errors import AgnosticCamError, MissingDependencyError, OptionError

EXTRA = "pip install 'agnostic-cam[ray]'"


def require(module: str, what: str = "the Ray engine"):
    """Import ``module`` or raise MissingDependencyError naming the [ray] extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{what} needs {module}, which is not installed: {EXTRA}") from None


class AuditWorker:
    """A Ray Data actor: one explainer, records for batches of image names. ``threads``: ONNX
    Runtime threads per op, the worker's share of the CPUs (workers on one machine would otherwise
    each start one thread per core and contend); BLAS runs on one thread (see ``blas_one_thread``)."""

    def __init__(self, spec: dict, threads: int | None = None):
        from agnostic_cam.audit.context import Context
        from agnostic_cam.engine import session

        session.INTRA_OP_THREADS = threads
        self.blas = blas_one_thread()
        self.blas.__enter__()  # for the actor's life (its own process)
        self.ctx = Context.from_spec(spec)

    def __call__(self, batch: dict) -> dict:
        items = [Item(os.fsdecode(bytes(p)), os.fsdecode(bytes(r)), str(lab) or None)
                 for p, r, lab in zip(batch["path"], batch["rel"], batch["true_label"])]
        results = record.compute_records(self.ctx, [record.load(self.ctx, it) for it in items])
        return {"record": [json.dumps(r.record) for r in results], "files": [pickle.dumps(r.files) for r in results],
                "pid": [os.getpid()] * len(results)}


def run_ray(ctx, items: Iterable[Item], workers: int | None = None, address: str | None = None,
            gpus_per_worker: float = 0, **_) -> Iterator[record.Result]:
    """Results of ``items`` computed by ``workers`` Ray actors (default 1 per 2 CPUs of the cluster).

    Checks the options and that Ray is installed when called (before any image), then streams."""
    ray = require("ray")
    require("ray.data")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise OptionError(f"workers must be a positive int; got {workers!r}")
    if gpus_per_worker is None or gpus_per_worker < 0:
        raise OptionError(f"gpus_per_worker must be >= 0; got {gpus_per_worker!r}")
    return _stream(ray, ctx, list(items), workers, address, gpus_per_worker)


def _stream(ray, ctx, items: list[Item], workers, address, gpus_per_worker) -> Iterator[record.Result]:
    spec = ctx.spec()
    if not items:
        return
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 2))
        if workers is None:
            workers = max(1, cpus // 2)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"path": os.fsencode(it.path), "rel": os.fsencode(it.rel),
                                   "true_label": it.true_label or ""} for it in items],
                                 override_num_blocks=max(1, min(len(items), 4 * workers)))
        ds = ds.map_batches(AuditWorker, fn_constructor_kwargs={"spec": spec, "threads": max(1, cpus // workers)},
                            batch_size=ctx.cfg.batch_images,
                            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                            num_gpus=gpus_per_worker or None, batch_format="numpy")
        for row in typed_rows(ds):
            yield record.Result(json.loads(row["record"]), pickle.loads(row["files"]))
    finally:
        if started:
            ray.shutdown()


def typed_rows(ds):
    """The rows of a Ray dataset; a typed error raised in a worker comes back as itself (exit 2), not
    wrapped in a Ray trace."""
    try:
        yield from ds.iter_rows()
    except Exception as e:  # noqa: BLE001 - re-raised, typed when it was
        cause = getattr(e, "cause", None) or e.__cause__
        if isinstance(cause, AgnosticCamError):
            raise cause from None
        raise
