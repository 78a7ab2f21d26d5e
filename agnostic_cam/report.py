"""The audit report: one self-contained HTML file (overlays embedded as PNG data URIs)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from agnostic_cam.audit_files import METRIC_COLUMNS

_HEAD = {"deletion_auc": "Deletion AUC ↓", "insertion_auc": "Insertion AUC ↑", "drop_pct": "Average drop % ↓",
         "increase": "Increase in confidence ↑", "pointing_hit": "Pointing game ↑", "seconds": "Seconds / image"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d232a;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .meta{color:#5a6570;font-size:13px}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #d5dbe1;padding:4px 8px;text-align:right}
th{background:#f1f4f7} td.l,th.l{text-align:left} .best{font-weight:700;background:#e6f4ea}
.grid td{vertical-align:top;text-align:center} .grid img{width:150px;height:auto;image-rendering:pixelated;display:block}
.small{font-size:11px;color:#5a6570;text-align:left;line-height:1.35} .fail{color:#b3261e}
"""


def _img(out: Path, rel: str) -> str:
    try:
        data = (out / rel).read_bytes()
    except OSError:  # deleted since: the report still renders
        return f"<div class='small fail'>{html.escape(rel)} missing</div>"
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{html.escape(rel)}">'


def _fmt(v, col: str) -> str:
    if v is None:
        return "–"
    if col in ("increase", "pointing_hit"):
        return f"{100 * v:.0f}%"
    return f"{v:.3f}" if col != "drop_pct" else f"{v:.1f}"


def _best(summary: dict, col: str) -> set[str]:
    """Methods with the best mean of ``col`` (none when every method scores the same)."""
    vals = {m: round(s[col], 9) for m, s in summary.items() if s.get(col) is not None}
    if len(set(vals.values())) < 2 or col == "seconds":
        return set()
    target = (min if col in ("deletion_auc", "drop_pct") else max)(vals.values())
    return {m for m, v in vals.items() if v == target}


def render_report(results: dict, out: Path) -> str:
    """HTML for the audit ``results`` (as written to results.json); images read from ``out``."""
    out = Path(out)
    esc = html.escape
    s = results["summary"]
    run = results["run"]
    methods = list(s)
    cols = [c for c in METRIC_COLUMNS if any(v.get(c) is not None for v in s.values())]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>agnostic-cam audit: {esc(results['model'])}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Audit of {esc(results['model'])}</h1>",
             f"<div class='meta'>target layer <code>{esc(results['layer'])}</code> · input layout {esc(results['layout'])}"
             f" · methods {esc(', '.join(methods))} · {run.get('explained', len(results['images']))} images explained, "
             f"{len(run['failed'])} failed · deletion/insertion with {results['settings']['steps']} steps "
             f"(Petsiuk et al. 2018), average drop / increase in confidence (Chattopadhay et al. 2018)</div>"]
    # summary table
    parts.append("<h2>Summary (mean over images)</h2><table><tr><th class='l'>method</th><th>images</th>"
                 + "".join(f"<th>{esc(_HEAD[c])}</th>" for c in cols)
                 + "<th title='constant or rounding-noise maps, shown but uninformative'>degenerate maps</th></tr>")
    best = {c: _best(s, c) for c in cols}
    for m in methods:
        cells = "".join(f"<td class='{'best' if m in best[c] else ''}'>{_fmt(s[m][c], c)}</td>" for c in cols)
        deg = s[m].get("degenerate") or 0
        parts.append(f"<tr><td class='l'>{esc(m)}</td><td>{s[m]['images']}</td>{cells}"
                     f"<td class='{'fail' if deg else ''}'>{deg}</td></tr>")
    parts.append("</table>")
    if run["failed"]:
        parts.append(f"<h2 class='fail'>Images that could not be read ({len(run['failed'])})</h2><table>"
                     "<tr><th class='l'>file</th><th class='l'>error</th></tr>")
        parts += [f"<tr><td class='l'>{esc(f['file'])}</td><td class='l'>{esc(f['error'])}</td></tr>" for f in run["failed"]]
        parts.append("</table>")
    classes = results.get("classes") or {}
    if classes:
        n = sum(c["images"] for c in classes.values())
        acc = sum(c["correct"] for c in classes.values()) / n
        parts.append(f"<h2>Accuracy by folder label: {100 * acc:.1f}% of {n}</h2><table><tr><th class='l'>label</th>"
                     "<th>images</th><th>top-1 accuracy</th></tr>")
        parts += [f"<tr><td class='l'>{esc(k)}</td><td>{c['images']}</td><td>{100 * c['accuracy']:.1f}%</td></tr>"
                  for k, c in classes.items()]
        parts.append("</table>")
    if run.get("interrupted"):
        parts.append(f"<p class='fail'>Interrupted after {run.get('explained', 0) + len(run['failed'])} of "
                     f"{run.get('total', '?')} images: rerun the same command to resume.</p>")
    # per-image grid
    shown = len(results["images"])
    note = "" if shown >= run.get("explained", shown) else f" (a sample of {shown}: best and worst per method, then random)"
    parts.append(f"<h2>Per image{note}</h2><table class='grid'><tr><th class='l'>image</th>"
                 + "".join(f"<th>{esc(m)}</th>" for m in methods) + "</tr>")
    for r in results["images"]:
        head = (f"<td class='l'>{_img(out, r['input'])}<div class='small'><b>{esc(r['file'])}</b><br>"
                f"class {esc(r['label'])} · score {r['score']:.3g} · p {r['probability']:.3f}</div></td>")
        cells = []
        for m in methods:
            row = r["methods"].get(m)
            if row is None:
                cells.append("<td>–</td>")
                continue
            info = "<br>".join(f"{esc(_HEAD[c].split(' ↓')[0].split(' ↑')[0])}: {_fmt(row.get(c), c)}"
                               for c in cols if c != "seconds")
            if row.get("degenerate"):
                info += f"<br><span class='fail'>&#9888; degenerate map: {esc(row['degenerate'])}</span>"
            cells.append(f"<td>{_img(out, row['overlay'])}<div class='small'>{info}</div></td>")
        parts.append(f"<tr>{head}{''.join(cells)}</tr>")
    parts.append("</table><p class='meta'>Made with agnostic-cam. Metrics are computed on the model's softmax "
                 "probability of the explained class. Overlays: jet colormap, red = most relevant.</p></body></html>")
    return "\n".join(parts)
