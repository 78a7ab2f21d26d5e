"""The audit's result files from its records: results.json, metrics.csv / metrics.parquet, report.html.

Knows records and summaries only, never engines. The records are read once, one at a time (the
runner passes a view that loads each from the store), so memory does not grow with the number of
images: every file is written as they come (see :mod:`agnostic_cam.audit.streaming`). The report
summarises every image but embeds overlays for a bounded sample (best and worst per method, then a
seeded random rest).
"""
from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from agnostic_cam.audit.streaming import ImagesJson, ParquetRows, Sample, Summary
from agnostic_cam.audit.files import CSV_HEADER, atomic_file, atomic_write, csv_rows
from agnostic_cam.audit.multilabel import RowRecords
from agnostic_cam.audit.ranking import rank_methods

FORMATS = ("csv", "parquet")


def write_outputs(out: Path, header: dict, records: Iterable[dict], failed: list[dict], methods: list[str],
                  fmt: str = "csv", report_images: int = 200) -> dict:
    """Write the result files for ``records`` (in image order, iterated once); returns results.json's
    content, whose ``images`` is ``records`` itself (csv format; ``[]`` for parquet, as in the file)."""
    from agnostic_cam.audit.report import render_report

    from agnostic_cam.audit.box_truth import BOX_COLUMNS, csv_rows as box_rows

    out = Path(out)
    per_class = RowRecords(records) if header.get("task") == "multilabel" else None  # one record per (image, class)
    records = records if per_class is None else per_class
    summary, sample = Summary(methods), Sample(methods, report_images, header.get("fingerprint", ""))
    boxes: list[list] = []  # boxes.csv: detectors against ground-truth boxes, a row per box and method
    with ImagesJson(out) as images:
        if fmt == "parquet":
            with atomic_file(out / "metrics.parquet") as f, ParquetRows(f) as rows:
                for r in records:
                    summary.add(r)
                    sample.add(r)
                    rows.add(r)
                    boxes.extend(box_rows(r))
        else:
            with atomic_file(out / "metrics.csv", text=True) as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(CSV_HEADER)
                for r in records:
                    summary.add(r)
                    sample.add(r)
                    images.add(r)
                    w.writerows(csv_rows(r))
                    boxes.extend(box_rows(r))
        results = {**header, "summary": summary.summary(), "classes": summary.classes()}
        results["ranking"] = rank_methods(results["summary"])  # None with one method
        results["run"] = {**header.get("run", {}), "explained": sample.n, "failed": failed}
        if per_class is not None:
            results["no_class"] = per_class.no_class  # images without a present class: no row
        if fmt == "parquet":
            results["records"] = "metrics.parquet"
            results["images"] = []
        else:
            results["images"] = records
        with atomic_file(out / "results.json") as f:
            images.write(results, f)
    if boxes:
        with atomic_file(out / "boxes.csv", text=True) as f:
            csv.writer(f, lineterminator="\n").writerows([BOX_COLUMNS, *boxes])
    shown = sample.records()
    atomic_write(out / "report.html", render_report({**results, "images": shown}, out))
    return results
