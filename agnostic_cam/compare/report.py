"""The ``compare`` command's report (one self-contained HTML file, strips embedded as PNG data
URIs, rendered from ``templates/compare.html.j2``) and its CSV text."""
from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

from agnostic_cam.audit.files import csv_cell, display
from agnostic_cam.compare.result import COLUMNS, TEXT_COLUMNS, _cell

REPORT_IMAGES = 24  # worst-agreeing images shown in the report (every image is in compare.csv)


def csv_text(rows: list[dict]) -> str:
    """compare.csv: one row per image, method and pair; names neutralised for spreadsheets."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([csv_cell(r.get(c)) if c in (*TEXT_COLUMNS, "image") else _cell(r.get(c)) for c in COLUMNS])
    return buf.getvalue()


def _num(v, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def _img(out: Path, rel: str) -> str | None:
    try:
        return "data:image/png;base64," + base64.b64encode((out / rel).read_bytes()).decode()
    except OSError:
        return None


def report_context(results: dict, out: Path) -> dict:
    """What the template shows, as strings."""
    summary = [{"method": m, "pair": p, "images": s["images"], "max_diff": _num(s["max_diff"], ".2e"),
                "mean_diff": _num(s["mean_diff"], ".2e"), "spearman": _num(s["spearman"]), "ssim": _num(s["ssim"]),
                "iou": _num(s["iou"]), "top1": f"{100 * s['top1_agree']:.0f}%",
                "score_diff": _num(s["score_diff"], ".2e")}
               for m, by in results["summary"].items() for p, s in by.items()]
    worst = [{"file": display(w["file"]), "disagreement": _num(w["disagreement"], ".4f"),
              "src": _img(Path(out), w["strip"])} for w in results["worst_images"][:REPORT_IMAGES]]
    walk = results.get("walk")
    walk_rows = []
    if walk:
        split = walk.get("first_split") or {}
        walk_rows = [{"a": r["a"], "b": r["b"], "shape": "x".join(str(d) for d in r["shape"]),
                      "act_rel": _num(r["act_rel"], ".2e"), "map_diff": _num(r["map_diff"], ".2e"),
                      "over": r["over"], "split": r["a"] == split.get("a") and r["b"] == split.get("b")}
                     for r in walk["rows"]]
    run = results["run"]
    return {"models": results["models"], "files": results["files"], "layers": results["layers"],
            "methods": results["methods"], "top_pct": f"{100 * results['settings']['top']:g}",
            "summary": summary, "worst": worst, "shown": len(worst), "explained": run["explained"],
            "failed": run["failed"], "interrupted": run["interrupted"], "total": run["total"], "walk": walk,
            "walk_rows": walk_rows}


def render_compare_report(results: dict, out: Path) -> str:
    """HTML for the comparison ``results`` (results.json's content); strips read from ``out``."""
    from agnostic_cam.render.templating import render

    return render("compare.html.j2", **report_context(results, out))
