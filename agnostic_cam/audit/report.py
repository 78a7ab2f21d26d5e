"""The audit report: one self-contained HTML file (overlays embedded as PNG data URIs), rendered
from ``templates/report.html.j2`` (Jinja2, autoescaped). This module turns results.json's content
into display rows; what goes into results.json is the audit's business (agnostic_cam.audit)."""
from __future__ import annotations

import base64
from pathlib import Path

from agnostic_cam.audit.files import METRIC_COLUMNS

_HEAD = {"deletion_auc": "Deletion AUC ↓", "insertion_auc": "Insertion AUC ↑", "drop_pct": "Average drop % ↓",
         "increase": "Increase in confidence ↑", "pointing_hit": "Pointing game ↑",
         "energy_pointing": "Energy pointing game ↑", "relevance_mass": "Relevance mass ↑",
         "relevance_rank": "Relevance rank ↑", "roc_auc": "Localisation AUC ↑", "sparseness": "Sparseness ↑",
         "complexity": "Complexity ↓", "seconds": "Seconds / image"}
_LOWER_IS_BETTER = ("deletion_auc", "drop_pct", "complexity")
_FRACTIONS = ("increase", "pointing_hit")  # shares of images: shown as % with the count n/N


def _img(out: Path, rel: str) -> dict:
    try:
        data = (out / rel).read_bytes()
    except OSError:  # deleted since: the report still renders
        return {"src": None, "alt": rel}
    return {"src": "data:image/png;base64," + base64.b64encode(data).decode(), "alt": rel}


def fmt(v, col: str, n: int | None = None) -> str:
    """A metric as shown: fractions as a percentage with the count ``hits/n`` when ``n`` is given."""
    if v is None:
        return "–"
    if col in _FRACTIONS:
        return f"{100 * v:.0f}%" + (f" ({round(v * n)}/{n})" if n else "")
    return f"{v:.1f}" if col == "drop_pct" else f"{v:.3f}"


def best_methods(summary: dict, col: str) -> set[str]:
    """Methods whose mean of ``col`` is the best *as displayed*: none when every method shows the
    same text (two means that both display as 0.002 are a tie, not a winner)."""
    if col == "seconds":
        return set()
    vals = {m: s[col] for m, s in summary.items() if s.get(col) is not None}
    shown = {m: fmt(v, col) for m, v in vals.items()}
    if len(set(shown.values())) < 2:
        return set()
    pick = (min if col in _LOWER_IS_BETTER else max)(vals, key=vals.get)
    return {m for m in vals if shown[m] == shown[pick]}


def _short(col: str) -> str:
    return _HEAD[col].replace(" ↓", "").replace(" ↑", "")


def report_context(results: dict, out: Path) -> dict:
    """Everything the template shows, as plain strings and numbers."""
    out = Path(out)
    s, run = results["summary"], results["run"]
    methods = list(s)
    cols = [c for c in METRIC_COLUMNS if any(v.get(c) is not None for v in s.values())]
    best = {c: best_methods(s, c) for c in cols}
    summary = [{"method": m, "images": s[m]["images"],
                "cells": [{"text": fmt(s[m][c], c, (s[m].get("counts") or {}).get(c)), "best": m in best[c]}
                          for c in cols], "degenerate": s[m].get("degenerate") or 0} for m in methods]
    classes = results.get("classes") or {}
    n_cls = sum(c["images"] for c in classes.values())
    accuracy = None
    if classes:
        correct = sum(c["correct"] for c in classes.values())
        accuracy = {"text": f"{100 * correct / n_cls:.1f}% ({correct}/{n_cls})",
                    "rows": [{"label": k, "images": c["images"],
                              "accuracy": f"{100 * c['accuracy']:.1f}% ({c['correct']}/{c['images']})"}
                             for k, c in classes.items()]}
    images = []
    for r in results["images"]:
        true = r.get("true_label")
        cells = []
        for m in methods:
            row = r["methods"].get(m)
            cells.append(None if row is None else {
                "img": _img(out, row["overlay"]),
                "metrics": [f"{_short(c)}: {fmt(row.get(c), c)}" for c in cols if c != "seconds"],
                "degenerate": row.get("degenerate")})
        images.append({"file": r["file"], "input": _img(out, r["input"]), "label": r["label"], "true": true,
                       "wrong": true is not None and r["label"] != true, "score": f"{r['score']:.3g}",
                       "probability": "–" if r.get("probability") is None else f"{r['probability']:.3f}",
                       "target": r.get("target"), "cells": cells,
                       "gt": None if r.get("ground_truth") in (None, "ok") else r["ground_truth"],
                       "boxes": [_box_line(i, b) for i, b in enumerate(r.get("boxes") or [])]})
    shown = len(results["images"])
    explained = run.get("explained", shown)
    return {"model": results["model"], "task": results.get("task", "classify"), "layer": results["layer"], "layout": results["layout"], "methods": methods,
            "explained": explained, "failed": run["failed"], "steps": results["settings"]["steps"],
            "heads": [_HEAD[c] for c in cols], "summary": summary, "accuracy": accuracy, "images": images,
            "sample_note": "" if shown >= explained else f" (a sample of {shown} of {explained}: best and worst per "
                                                          "method, then random)",
            "interrupted": run.get("interrupted", False), "done": explained + len(run["failed"]),
            "total": run.get("total", "?"), "ranking": _ranking(results.get("ranking"))}


def _box_line(i: int, b: dict) -> str:
    """One ground-truth box of a detector audit: its match and each method's energy-based pointing game."""
    box = "[" + ", ".join(f"{v:.0f}" for v in b["box"]) + "]"
    if not b["matched"]:
        return f"box {i} {box} class {b['class']}: unmatched ({b['why']})"
    scores = ", ".join(f"{m} {'–' if v is None else f'{v:.3f}'}" for m, v in b["energy_pointing"].items())
    return (f"box {i} {box} class {b['class']}: detection score {b['detection_score']:.3g}, IoU {b['iou']:.2f}; "
            f"energy in box: {scores}")


def _ranking(r: dict | None) -> dict | None:
    """The ranking section: rank of each method per metric, Kendall's tau, and the verdict."""
    if not r or not r["metrics"]:
        return None
    methods = list(next(iter(r["ranks"].values())))
    return {"heads": [_HEAD[c] for c in r["metrics"]],
            "rows": [{"method": m, "ranks": [f"{r['ranks'][c][m]:g}" for c in r["metrics"]]} for m in methods],
            "tau": [{"pair": " ~ ".join(_short(c) for c in k.split(" ~ ")), "tau": "–" if t is None else f"{t:+.2f}"}
                    for k, t in r["kendall_tau"].items()],
            "mean_tau": None if r["mean_tau"] is None else f"{r['mean_tau']:+.2f}", "best": r["best"],
            "verdict": r["verdict"]}


def render_report(results: dict, out: Path) -> str:
    """HTML for the audit ``results`` (as written to results.json); images read from ``out``."""
    from agnostic_cam.render.templating import render

    return render("report.html.j2", **report_context(results, out))
