"""Audit an ONNX model over a folder of images: maps per method, faithfulness metrics, a report.

Resumable: each finished image leaves a small JSON record under ``OUT/.audit/``; a later run with
the same model, settings and unchanged image files reuses it instead of recomputing. Every file is
written atomically (a temporary file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agnostic_cam import metrics
from agnostic_cam.preprocess import IMAGE_SUFFIXES, Preprocess

METRIC_COLUMNS = ("deletion_auc", "insertion_auc", "drop_pct", "increase", "pointing_hit", "seconds")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_writable(out: Path) -> None:
    """Create ``out`` if needed and check files can be written there (clear error otherwise)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write to the output directory {out}: {e.strerror or e}; choose another --out") from None


def find_images(folder: Path) -> list[Path]:
    """Image files (by suffix) directly in ``folder``, sorted; ValueError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


@dataclass
class AuditConfig:
    methods: list[str]
    steps: int = 20
    target: int | None = None
    boxes: dict[str, list] = field(default_factory=dict)
    labels: list[str] | None = None
    resume: bool = True


class Audit:
    """Runs one audit. ``explainer``: from :meth:`Explainer.from_onnx`; ``preprocess``: the spec
    that turns the files into the model's input; ``model_bytes`` fingerprints the model."""

    def __init__(self, explainer, preprocess: Preprocess, config: AuditConfig, out: Path, model_bytes: bytes,
                 model_name: str = "model.onnx"):
        self.ex, self.pre, self.cfg, self.out = explainer, preprocess, config, Path(out)
        self.model_name = model_name
        unknown = [m for m in config.methods if m not in explainer.methods]
        if unknown:
            raise ValueError(f"method(s) {unknown} cannot run on this model; available: {', '.join(explainer.methods)}"
                             + (f". {explainer.adapter.gradient_hint}" if getattr(explainer.adapter, "gradient_hint", "") else ""))
        settings = {"layer": explainer.layer, "output": explainer.adapter.output_name, "methods": config.methods,
                    "steps": config.steps, "target": config.target, "preprocess": preprocess.to_dict(),
                    "boxes": config.boxes, "labels": config.labels}
        h = hashlib.sha256(model_bytes)
        h.update(json.dumps(settings, sort_keys=True).encode())
        self.fingerprint = h.hexdigest()[:16]
        self.settings = settings
        self.state = self.out / ".audit"
        self.img_dir = self.out / "overlays"

    # -- one image -------------------------------------------------------------------------------
    def _key(self, path: Path) -> str:
        return hashlib.sha1(path.name.encode()).hexdigest()[:12]

    def _cached(self, path: Path) -> dict | None:
        if not self.cfg.resume:
            return None
        f = self.state / f"{self._key(path)}.json"
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            return None
        st = path.stat()
        ok = (rec.get("fingerprint") == self.fingerprint and rec.get("stat") == [st.st_size, st.st_mtime_ns]
              and all((self.out / m["overlay"]).is_file() for m in rec.get("methods", {}).values()))
        return rec if ok else None

    def _label(self, k: int) -> str:
        labels = self.cfg.labels
        return labels[k] if labels and 0 <= k < len(labels) else str(k)

    def run_image(self, path: Path) -> dict:
        """Explain one image with every method and score the maps; returns its record."""
        from PIL import Image

        rgb = self.pre.load(path)
        x = self.pre.to_batch([rgb])
        x = self.ex.adapter.prepare(x)
        out = self.ex.predict(x)
        k = int(out[0].argmax()) if self.cfg.target is None else int(self.cfg.target)
        prob = float(metrics.softmax(out.astype(np.float64))[0, k])
        rec = {"file": path.name, "stat": [path.stat().st_size, path.stat().st_mtime_ns], "fingerprint": self.fingerprint,
               "class": k, "label": self._label(k), "score": float(out[0, k]), "probability": prob, "methods": {}}
        layout = self.ex.adapter.layout
        box = self.cfg.boxes.get(path.name)
        for method in self.cfg.methods:
            t0 = time.perf_counter()
            e = self.ex.explain(x, method, target=k)
            heat = e.heatmap
            row = {
                "deletion_auc": float(metrics.deletion_auc(self.ex, x, heat, k, steps=self.cfg.steps, layout=layout,
                                                           progress=False)[0]),
                "insertion_auc": float(metrics.insertion_auc(self.ex, x, heat, k, steps=self.cfg.steps, layout=layout,
                                                             progress=False)[0]),
            }
            cc = metrics.confidence_change(self.ex, x, heat, k, layout=layout)
            row["drop_pct"] = float(100 * cc["drop"][0])
            row["increase"] = float(cc["increase"][0])
            row["pointing_hit"] = None if box is None else float(metrics.pointing_game(heat, [box])[0])
            row["seconds"] = round(time.perf_counter() - t0, 4)
            name = f"{path.stem}__{method.replace('+', 'p')}.png"
            buf = io.BytesIO()
            Image.fromarray(e.overlay(rgb[None])[0]).save(buf, format="PNG")
            atomic_write(self.img_dir / name, buf.getvalue())
            row["overlay"] = f"overlays/{name}"
            rec["methods"][method] = row
        thumb = io.BytesIO()
        Image.fromarray(rgb).save(thumb, format="PNG")
        atomic_write(self.img_dir / f"{path.stem}__input.png", thumb.getvalue())
        rec["input"] = f"overlays/{path.stem}__input.png"
        atomic_write(self.state / f"{self._key(path)}.json", json.dumps(rec))
        return rec

    # -- the whole folder ------------------------------------------------------------------------
    def run(self, images: list[Path], progress: bool | None = None) -> dict:
        """Audit ``images``; writes results.json, metrics.csv and report.html; returns the results."""
        from tqdm.auto import tqdm

        from agnostic_cam.report import render_report

        check_writable(self.out)
        for d in (self.state, self.img_dir):
            d.mkdir(exist_ok=True)
        records, failed, computed, reused = [], [], [], []
        t0 = time.perf_counter()
        for path in tqdm(images, desc="Audit", unit="img", disable=None if progress is None else not progress):
            rec = self._cached(path)
            if rec is not None:
                reused.append(path.name)
            else:
                try:
                    rec = self.run_image(path)
                except (ValueError, TypeError, OSError) as e:  # unreadable / unusable image: listed, not fatal
                    st = path.stat()
                    rec = {"file": path.name, "stat": [st.st_size, st.st_mtime_ns], "fingerprint": self.fingerprint,
                           "error": str(e)}
                    atomic_write(self.state / f"{self._key(path)}.json", json.dumps(rec))
                computed.append(path.name)
            if "error" in rec:
                failed.append({"file": rec["file"], "error": rec["error"]})
            else:
                records.append(rec)
        results = {
            "model": self.model_name, "layer": self.ex.layer, "layout": self.ex.adapter.layout,
            "settings": self.settings, "fingerprint": self.fingerprint,
            "run": {"computed": computed, "reused": reused, "failed": failed,
                    "seconds": round(time.perf_counter() - t0, 3)},
            "summary": summarize(records, self.cfg.methods), "images": records,
        }
        atomic_write(self.out / "results.json", json.dumps(results, indent=1))
        atomic_write(self.out / "metrics.csv", to_csv(records))
        atomic_write(self.out / "report.html", render_report(results, self.out))
        return results


def summarize(records: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per method: the mean of each metric over images (None when no image has it)."""
    summary = {}
    for m in methods:
        rows = [r["methods"][m] for r in records if m in r["methods"]]
        s = {"images": len(rows)}
        for col in METRIC_COLUMNS:
            vals = [row[col] for row in rows if row.get(col) is not None]
            s[col] = float(np.mean(vals)) if vals else None
        summary[m] = s
    return summary


def to_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "method", "class", "label", "score", "probability", *METRIC_COLUMNS])
    for r in records:
        for m, row in r["methods"].items():
            w.writerow([r["file"], m, r["class"], r["label"], f"{r['score']:.6g}", f"{r['probability']:.6g}",
                        *("" if row.get(c) is None else f"{row[c]:.6g}" for c in METRIC_COLUMNS)])
    return buf.getvalue()
