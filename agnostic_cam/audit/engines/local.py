"""The local engine: images read and preprocessed in a background thread pool while the main
thread explains and scores batches of ``batch_images`` on one explainer (one ONNX Runtime session
for every method); the same pool encodes the overlay PNGs while the curves run on ONNX Runtime.
NumPy's BLAS is kept to one thread meanwhile (see :func:`blas_one_thread`)."""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from agnostic_cam.audit import record
from agnostic_cam.engine.threads import blas_one_thread
from agnostic_cam.audit.sources import Item


def run_local(ctx, items: Iterable[Item], workers: int | None = None, **_) -> Iterator[record.Result]:
    """Results of ``items`` in order. ``workers``: reader threads (default: min(4, CPUs))."""
    workers = workers or min(4, os.cpu_count() or 1)
    size = ctx.cfg.batch_images
    prefetch = max(2 * size, workers * 2)
    it = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="audit-read") as pool, blas_one_thread():
        window: deque = deque()

        def fill() -> None:
            while len(window) < prefetch:
                item = next(it, None)
                if item is None:
                    return
                window.append(pool.submit(record.load, ctx, item))

        fill()
        ctx.pool = pool  # record._compute encodes PNGs here
        try:
            batch: list[record.Loaded] = []
            while window:
                batch.append(window.popleft().result())
                fill()
                if len(batch) == size or not window:
                    yield from record.compute_records(ctx, batch)
                    batch = []
        finally:
            ctx.pool = None
            for f in window:
                f.cancel()
