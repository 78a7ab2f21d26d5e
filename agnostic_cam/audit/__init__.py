"""Audit an ONNX model over many images: maps per method, faithfulness metrics, a report.

>>> from agnostic_cam import audit
>>> results = audit.run("model.onnx", "images/", "out/", methods=["scorecam", "gradcam"])  # doctest: +SKIP

Layout (one audit, several engines):

- :mod:`~agnostic_cam.audit.sources`: which images (folder, folder tree, list file; symlinks).
- :mod:`~agnostic_cam.audit.context`: settings, explainer, fingerprints, checks done once.
- :mod:`~agnostic_cam.audit.record`: THE per-image record (what is computed, where its files go).
- :mod:`~agnostic_cam.audit.store`: records on disk and what a rerun may reuse (resume).
- :mod:`~agnostic_cam.audit.engines`: local (threads) and Ray Data; they only schedule records.
- :mod:`~agnostic_cam.audit.outputs`: results.json, metrics.csv/parquet, report.html.
- :mod:`~agnostic_cam.audit.streaming`: those files built one record at a time (bounded memory).
- :mod:`~agnostic_cam.audit.runner`: :func:`run`, tying them together, with the fault policy.

Resumable: each finished image leaves a record under ``OUT/.audit/``; a later run with the same
model (and external weights), settings and unchanged image contents reuses it.
"""
from agnostic_cam.audit.context import AuditConfig
from agnostic_cam.audit.runner import AuditInterrupted, run
from agnostic_cam.audit.sources import Item, list_images
from agnostic_cam.audit.files import METRIC_COLUMNS, OutputError, atomic_write, check_writable

__all__ = ["run", "AuditConfig", "AuditInterrupted", "Item", "list_images", "METRIC_COLUMNS", "OutputError",
           "atomic_write", "check_writable"]
