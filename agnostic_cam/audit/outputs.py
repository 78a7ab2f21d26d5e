"""The audit's result files from its records: results.json, metrics.csv / metrics.parquet, report.html.

Knows records and summaries only, never engines. The report summarises every image but embeds
overlays for a bounded sample (best and worst per method, then a seeded random rest).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from agnostic_cam.audit_files import METRIC_COLUMNS, atomic_write, per_class, summarize, to_csv

FORMATS = ("csv", "parquet")


def sample_records(records: list[dict], methods: list[str], limit: int, seed: str = "") -> list[dict]:
    """At most ``limit`` records, in their order: per method the best and worst deletion AUC first,
    then a random rest (seeded by ``seed``, so reruns pick the same)."""
    if len(records) <= limit:
        return list(records)
    chosen: dict[str, dict] = {}
    per = max(1, limit // (4 * max(1, len(methods))))
    for m in methods:
        rows = sorted((r for r in records if m in r["methods"]), key=lambda r: r["methods"][m]["deletion_auc"])
        for r in rows[:per] + rows[-per:]:
            chosen.setdefault(r["key"], r)
    rest = [r for r in records if r["key"] not in chosen]
    random.Random(seed).shuffle(rest)
    for r in rest[:max(0, limit - len(chosen))]:
        chosen[r["key"]] = r
    order = {r["key"]: i for i, r in enumerate(records)}
    return sorted(chosen.values(), key=lambda r: order[r["key"]])[:limit]


def to_parquet(records: list[dict], path: Path) -> None:
    """metrics.parquet: the CSV's rows with typed columns (needs pyarrow, part of the [ray] extra)."""
    from agnostic_cam.audit.engines.ray import require

    require("pyarrow", "--format parquet")
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"image": r["file"], "method": m, "class": r["class"], "label": r["label"], "true_label": r.get("true_label"),
             "score": r["score"], "probability": r["probability"], **{c: row.get(c) for c in METRIC_COLUMNS},
             "task": r.get("task", "classify"), "target": r.get("target", f"class {r['class']}")}
            for r in records for m, row in r["methods"].items()]
    schema = pa.schema([("image", pa.string()), ("method", pa.string()), ("class", pa.int64()), ("label", pa.string()),
                        ("true_label", pa.string()), ("score", pa.float64()), ("probability", pa.float64()),
                        *((c, pa.float64()) for c in METRIC_COLUMNS), ("task", pa.string()), ("target", pa.string())])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    atomic_write(path, buf.getvalue())


def write_outputs(out: Path, header: dict, records: list[dict], failed: list[dict], methods: list[str],
                  fmt: str = "csv", report_images: int = 200) -> dict:
    """Write the result files for ``records`` (in image order); returns results.json's content."""
    from agnostic_cam.report import render_report

    out = Path(out)
    results = {**header, "summary": summarize(records, methods), "classes": per_class(records)}
    results["run"] = {**header.get("run", {}), "explained": len(records), "failed": failed}
    if fmt == "parquet":
        to_parquet(records, out / "metrics.parquet")
        results["records"] = "metrics.parquet"
        results["images"] = []
    else:
        atomic_write(out / "metrics.csv", to_csv(records))
        results["images"] = records
    atomic_write(out / "results.json", json.dumps(results, indent=1))
    shown = sample_records(records, methods, report_images, header.get("fingerprint", ""))
    atomic_write(out / "report.html", render_report({**results, "images": shown}, out))
    return results
