"""The audit's output files, shared by the audit and its report: columns, safe names, atomic writes.

This module imports nothing else of the audit, so ``agnostic_cam.audit`` and
``agnostic_cam.report`` both import it and never each other's internals in a circle.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from agnostic_cam.errors import AgnosticCamError

METRIC_COLUMNS = ("deletion_auc", "insertion_auc", "drop_pct", "increase", "pointing_hit", "seconds")
IMAGE_COLUMNS = ("image", "method", "class", "label", "true_label", "score", "probability")
TASK_COLUMNS = ("task", "target")  # classify / segment / detect, and what was explained (last columns)
STEM_CHARS = 60  # longest file-name stem kept in overlay names (the rest is replaced by a hash)


class OutputError(AgnosticCamError, OSError):
    """An output file could not be written (disk full, permissions). Nothing half-written is left."""


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so readers never see a half-written file.

    A temporary file in the same folder is written, flushed and renamed over ``path``; on any
    failure (disk full, permissions) the temporary file is removed and :class:`OutputError`
    names the path and the cause.
    """
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # unique per call
        tmp = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # also Ctrl-C mid-write: never leave the temporary file behind
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {display(str(path))}: {e.strerror or e}. Free some space or choose "
                              "another --out, then rerun: finished images are kept and resumed") from e
        raise


def check_writable(out: Path) -> None:
    """Create ``out`` if needed and check files can be written there (clear error otherwise)."""
    probe = Path(out) / f".write-test{os.getpid()}"
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write to the output directory {out}: {e.strerror or e}; choose another --out") from None


def display(name: str) -> str:
    """A file name fit for text (JSON, CSV, HTML): bytes that are not UTF-8 shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def name_key(rel: str) -> str:
    """A stable 12-hex key of a relative file name (its raw bytes, so non-UTF-8 names work)."""
    return hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def overlay_stem(rel: str) -> str:
    """A unique, short, portable stem for the files of image ``rel`` in ``overlays/``.

    ``a.png`` and ``a.jpg`` (or ``x/a.png``) get different stems: the readable part (at most
    :data:`STEM_CHARS` characters of ASCII letters, digits, ``-_.``) is followed by a key of the
    whole relative name.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", display(Path(rel).stem)).strip("._")[:STEM_CHARS] or "image"
    return f"{readable}-{name_key(rel)[:8]}"


def csv_cell(text: str) -> str:
    """Text neutralised for spreadsheets: a leading ``= + - @`` (or tab/CR) gets a ``'`` in front,
    so a file named ``=HYPERLINK(...)`` is shown, never run as a formula (OWASP CSV injection)."""
    text = display(str(text))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(records: list[dict]) -> str:
    """metrics.csv: one row per image and method; text cells neutralised (:func:`csv_cell`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*IMAGE_COLUMNS, *METRIC_COLUMNS, *TASK_COLUMNS])
    for r in records:
        p = r.get("probability")
        for m, row in r["methods"].items():
            w.writerow([csv_cell(r["file"]), csv_cell(m), r["class"], csv_cell(r["label"]),
                        csv_cell(r.get("true_label") or ""), f"{r['score']:.6g}", "" if p is None else f"{p:.6g}",
                        *("" if row.get(c) is None else f"{row[c]:.6g}" for c in METRIC_COLUMNS),
                        r.get("task", "classify"), csv_cell(r.get("target", f"class {r['class']}"))])
    return buf.getvalue()


def summarize(records: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per method: the mean of each metric over images (None when no image has it), under
    ``counts`` how many images each mean is over, and the number of images whose map is degenerate."""
    summary = {}
    for m in methods:
        rows = [r["methods"][m] for r in records if m in r["methods"]]
        s: dict = {"images": len(rows)}
        for col in METRIC_COLUMNS:
            vals = [row[col] for row in rows if row.get(col) is not None]
            s[col] = float(np.mean(vals)) if vals else None
        s["counts"] = {col: sum(row.get(col) is not None for row in rows) for col in METRIC_COLUMNS}  # images per mean
        s["degenerate"] = sum(1 for row in rows if row.get("degenerate"))  # maps flagged (degenerate.py)
        summary[m] = s
    return summary


def per_class(records: list[dict]) -> dict[str, dict]:
    """For records with a ``true_label`` (folder-tree input): per true label, images and top-1 accuracy."""
    out: dict[str, dict] = {}
    for r in records:
        t = r.get("true_label")
        if t is None:
            continue
        s = out.setdefault(t, {"images": 0, "correct": 0})
        s["images"] += 1
        s["correct"] += int(r["label"] == t)
    for s in out.values():
        s["accuracy"] = s["correct"] / s["images"]
    return dict(sorted(out.items()))
