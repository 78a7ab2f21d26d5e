"""``agnostic-cam audit --sanity``: the model-randomisation test (:mod:`agnostic_cam.evaluation.sanity`) of
every audited method on a few of the audited images, added to the audit's outputs.

Writes ``sanity.json`` (one row per method: Spearman and SSIM of the fully randomised model's maps
with the original maps, and per cascade step), ``sanity_<method>.png`` (the test's figure), a
"sanity" entry in results.json and a table in report.html. A method whose maps barely change when
every learned layer is randomised (mean Spearman >= ``threshold``) is flagged: its maps do not
depend on what the model learned.
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import numpy as np

from agnostic_cam.audit.sources import list_images
from agnostic_cam.errors import InputError

log = logging.getLogger("agnostic_cam.audit")
THRESHOLD = 0.5


def run_sanity(ex, pre, images, methods: list[str], out: Path, n_images: int = 4, steps: int | None = 6,
               threshold: float = THRESHOLD, follow_symlinks: bool = False) -> list[dict]:
    """Run the test for ``methods`` on the first ``n_images`` readable images; write its outputs."""
    from agnostic_cam.evaluation.sanity import model_randomization

    out = Path(out)
    items, _ = list_images(images, follow_symlinks, out=out)
    batch = []
    for it in items:
        if len(batch) == n_images:
            break
        try:
            batch.append(pre(it.path)[0])
        except InputError:  # an unusable image is the audit's business; the check takes the next one
            continue
    if not batch:
        raise InputError("--sanity found no readable image to run the model-randomisation test on")
    x = np.stack(batch)
    rows = []
    for m in methods:
        res = model_randomization(ex, x, m, steps=steps)
        fin = res.final()
        row = {"method": m, "images": len(x), "layers": len(res.layers), "steps": res.steps,
               "spearman": round(fin["spearman"], 4), "ssim": round(fin["ssim"], 4),
               "spearman_per_step": [round(float(v), 4) for v in np.nanmean(res.spearman, axis=1)],
               "insensitive": bool(fin["spearman"] >= threshold), "figure": f"sanity_{m}.png"}
        res.figure().savefig(out / row["figure"], dpi=90)
        if row["insensitive"]:
            log.warning("sanity: %s maps barely change when the model is randomised (Spearman %.2f >= %.2f): they "
                        "do not explain what the model learned", m, fin["spearman"], threshold)
        rows.append(row)
    (out / "sanity.json").write_text(json.dumps(rows, indent=1))
    _add_to_results(out, rows)
    _add_to_report(out, rows, threshold)
    return rows


def _add_to_results(out: Path, rows: list[dict]) -> None:
    path = out / "results.json"
    if path.is_file():
        res = json.loads(path.read_text())
        res["sanity"] = rows
        path.write_text(json.dumps(res, indent=1))


def _add_to_report(out: Path, rows: list[dict], threshold: float) -> None:
    path = out / "report.html"
    if not path.is_file():
        return
    cells = "".join(
        f"<tr><td>{html.escape(r['method'])}</td><td>{r['spearman']:.2f}</td><td>{r['ssim']:.2f}</td>"
        f"<td>{'WARNING: barely changes - not explaining the model' if r['insensitive'] else 'ok'}</td>"
        f"<td><a href=\"{html.escape(r['figure'])}\">figure</a></td></tr>" for r in rows)
    section = (f"<section id=\"sanity\"><h2>Sanity check: model randomisation</h2><p>Every learned layer of the "
               f"model re-initialised, top layer first (Adebayo et al. 2018), on {rows[0]['images']} images. A method "
               f"whose maps keep a Spearman correlation of {threshold} or more with the original maps is flagged."
               f"</p><table><tr><th>method</th><th>Spearman</th><th>SSIM</th><th>verdict</th><th></th></tr>{cells}"
               "</table></section>\n")
    text = path.read_text()
    at = text.rfind("</body>")
    path.write_text(text[:at] + section + text[at:] if at >= 0 else text + section)
