"""The ``compare`` command on Ray (``--engine ray``): a Ray Data pipeline of image paths -> actors
that each load every model once from its spec (an .onnx / Keras file or module:factory) and call
the same :func:`~agnostic_cam.compare.batch.compute_batch` as the local engine -> results streamed
back to the driver, which writes the files and records as they arrive (resume works across
engines). Needs the ``[ray]`` extra."""
from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator

from agnostic_cam.compare import batch as B
from agnostic_cam.errors import OptionError


class CompareWorker:
    """A Ray Data actor: the models of ``spec`` (specs, names, layer, job) and batches of images."""

    def __init__(self, spec: dict):
        from agnostic_cam.compare.models import load_explainer

        self.job = spec["job"]
        self.exs = {n: load_explainer(s, spec["layer"]) for n, s in zip(spec["names"], spec["specs"])}
        self.pre = B.preprocessors(self.exs, self.job.size)

    def __call__(self, batch: dict) -> dict:
        entries = [B.Entry(os.fsdecode(bytes(p)), str(f), str(k), str(s))
                   for p, f, k, s in zip(batch["path"], batch["file"], batch["key"], batch["stem"])]
        return {"result": [pickle.dumps(r) for r in B.compute_batch(self.job, self.exs, self.pre, entries)]}


def run_ray(spec: dict, entries: list, batch_images: int, workers: int | None = None,
            address: str | None = None) -> Iterator[dict]:
    """Results of ``entries`` computed by ``workers`` Ray actors (default 1 per 2 CPUs of the cluster)."""
    from agnostic_cam.audit.engines.ray import require

    ray = require("ray")
    require("ray.data")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise OptionError(f"workers must be a positive int; got {workers!r}")
    return _stream(ray, spec, entries, batch_images, workers, address)


def _stream(ray, spec, entries, batch_images, workers, address) -> Iterator[dict]:
    from agnostic_cam.audit.engines.ray import typed_rows

    if not entries:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"path": os.fsencode(e.path), "file": e.file, "key": e.key, "stem": e.stem}
                                  for e in entries], override_num_blocks=max(1, min(len(entries), 4 * workers)))
        ds = ds.map_batches(CompareWorker, fn_constructor_kwargs={"spec": spec}, batch_size=batch_images,
                            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, batch_format="numpy")
        for row in typed_rows(ds):
            yield pickle.loads(row["result"])
    finally:
        if started:
            ray.shutdown()
