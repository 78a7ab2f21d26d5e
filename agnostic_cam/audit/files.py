"""The audit's output files, shared by the audit and its report: columns, safe names, atomic writes.

This module imports nothing else of the audit, so ``agnostic_cam.audit`` and
``agnostic_cam.audit.report`` both import it and never each other's internals in a circle.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agnostic_cam.errors import AgnosticCamError

METRIC_COLUMNS = ("deletion_auc", "insertion_auc", "drop_pct", "increase", "pointing_hit", "energy_pointing",
                  "relevance_mass", "relevance_rank", "roc_auc", "sparseness", "complexity", "seconds")
IMAGE_COLUMNS = ("image", "method", "class", "label", "true_label", "score", "probability")
TASK_COLUMNS = ("task", "target")  # classify / segment / detect, and what was explained (last columns)
STEM_CHARS = 60  # longest file-name stem kept in overlay names (the rest is replaced by a hash)


class OutputError(AgnosticCamError, OSError):
    """An output file could not be written (disk full, permissions). Nothing half-written is left."""


def write_error(path: Path, e: OSError) -> OutputError:
    """The :class:`OutputError` for a failed write of ``path`` (its cause chained by the caller)."""
    return OutputError(f"cannot write {display(str(path))}: {e.strerror or e}. Free some space or choose "
                       "another --out, then rerun: finished images are kept and resumed")


@contextlib.contextmanager
def atomic_file(path: Path, text: bool = False) -> Iterator[IO]:
    """A file to write (bytes, or UTF-8 text with ``text``) that replaces ``path`` when the block ends.

    A temporary file in the same folder is written, flushed and renamed over ``path``, so readers
    never see a half-written file and a file of any size can be written piece by piece. On any
    failure in the block (disk full, permissions, Ctrl-C) the temporary file is removed; an
    ``OSError`` becomes :class:`OutputError` naming the path and the cause.
    """
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # unique per call
        tmp = Path(name)
        raw = os.fdopen(fd, "wb")
        with io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="") if text else raw as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # also Ctrl-C mid-write: never leave the temporary file behind
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
        if isinstance(e, OSError) and not isinstance(e, AgnosticCamError):
            raise write_error(path, e) from e
        raise


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); OutputError on failure."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)


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


CSV_HEADER = (*IMAGE_COLUMNS, *METRIC_COLUMNS, *TASK_COLUMNS)  # metrics.csv's first row


def csv_rows(r: dict) -> Iterator[list]:
    """metrics.csv's rows of record ``r``: one per method; text cells neutralised (:func:`csv_cell`)."""
    p = r.get("probability")
    for m, row in r["methods"].items():
        yield [csv_cell(r["file"]), csv_cell(m), r["class"], csv_cell(r["label"]),
               csv_cell(r.get("true_label") or ""), f"{r['score']:.6g}", "" if p is None else f"{p:.6g}",
               *("" if row.get(c) is None else f"{row[c]:.6g}" for c in METRIC_COLUMNS),
               r.get("task", "classify"), csv_cell(r.get("target", f"class {r['class']}"))]
