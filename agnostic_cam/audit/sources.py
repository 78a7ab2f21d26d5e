"""Which images an audit reads: a folder, a folder tree (sub-folder = label) or a list file.

- A folder: its image files (by suffix). When it has sub-folders with images (ImageFolder style),
  they are read too and the top sub-folder's name is each image's ``true_label`` (accuracy and
  per-class summaries then appear in the results).
- A ``.txt`` list: one path per line (relative to the list's folder; ``#`` comments). A ``.csv``
  list: columns ``path`` and optionally ``label`` (with that header), or path[,label] rows.
- Symbolic links that lead outside the folder are refused (listed as failed images) unless
  ``follow_symlinks=True``: a folder of images must not pull in files from elsewhere.
- The audit's own outputs are never inputs: with ``out`` equal to or inside the image folder, the
  folders it writes there (``overlays/`` and ``.audit/``, see :data:`OUTPUT_DIRS`) are not read
  (a second run would otherwise audit the first run's overlays as images).

An :class:`Item`'s identity is its relative name ``rel``; its key and overlay names derive from it.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from agnostic_cam.audit.files import display, name_key, overlay_stem
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.inputs.preprocess import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Item:
    """One image to audit: ``path`` to read, ``rel`` its name in the source, ``true_label`` or None."""

    path: str
    rel: str
    true_label: str | None = None

    @property
    def key(self) -> str:
        return name_key(self.rel)

    @property
    def file(self) -> str:
        """The name shown in results, CSV and report (non-UTF-8 bytes as U+FFFD)."""
        return display(self.rel)

    @property
    def stem(self) -> str:
        return overlay_stem(self.rel)


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _inside(path: str, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


OUTPUT_DIRS = ("overlays", ".audit")  # what an audit writes under its output folder (audit/store.py)


def list_images(source: str | os.PathLike, follow_symlinks: bool = False,
                out: str | os.PathLike | None = None) -> tuple[list[Item], list[dict]]:
    """(items to audit, refused ``{"file", "error"}``) from a folder or a list file, sorted by name;
    never the files an audit writes under ``out`` (its output folder)."""
    src = Path(source)
    if src.is_file() and src.suffix.lower() in (".txt", ".csv", ".lst"):
        return _from_list(src), []
    if not src.is_dir():
        raise OptionError(f"{display(str(src))} is neither a folder of images nor a .txt/.csv list of image paths")
    root_real = os.path.realpath(src)
    skip = set() if out is None else {os.path.realpath(os.path.join(out, d)) for d in OUTPUT_DIRS}
    items, refused = [], []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=follow_symlinks):
        dirnames.sort()
        reldir = os.path.relpath(dirpath, src)
        parts = [] if reldir == "." else reldir.split(os.sep)
        if not follow_symlinks:
            keep = []
            for d in dirnames:  # symlinked folders inside are not walked (os.walk), outside ones are reported
                full = os.path.join(dirpath, d)
                if os.path.islink(full) and not _inside(full, root_real):
                    refused.append({"file": display("/".join([*parts, d])),
                                    "error": "a symbolic link to a folder outside the image folder; refused "
                                             "(pass --follow-symlinks to read it)"})
                else:
                    keep.append(d)
            dirnames[:] = keep
        dirnames[:] = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in skip]
        for name in filenames:
            if not _is_image(name):
                continue
            full = os.path.join(dirpath, name)
            rel = "/".join([*parts, name])
            if not follow_symlinks and not _inside(full, root_real):
                refused.append({"file": display(rel), "error": "a symbolic link to a file outside the image folder; "
                                                               "refused (pass --follow-symlinks to read it)"})
                continue
            if not os.path.isfile(full):
                continue
            items.append(Item(full, rel, parts[0] if parts else None))
    items.sort(key=lambda it: it.rel)
    if not items and not refused:
        raise OptionError(f"no images in {display(str(src))} or its sub-folders (looked for {', '.join(IMAGE_SUFFIXES)})")
    return items, refused


def _from_list(path: Path) -> list[Item]:
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise OptionError(f"cannot read the image list {path}: {e.strerror}") from None
    rows: list[tuple[str, str | None]] = []
    if path.suffix.lower() == ".csv":
        table = [r for r in csv.reader(text.splitlines()) if r and r[0].strip()]
        head = [c.strip().lower() for c in table[0]] if table else []
        if "path" in head:
            ip, il = head.index("path"), (head.index("label") if "label" in head else None)
            table = table[1:]
        else:
            ip, il = 0, (1 if table and len(table[0]) > 1 else None)
        for r in table:
            if len(r) <= ip:
                raise OptionError(f"{path}: row {r} has no path column")
            rows.append((r[ip].strip(), r[il].strip() if il is not None and len(r) > il else None))
    else:
        rows = [(ln.strip(), None) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise OptionError(f"the image list {path} names no images")
    items, seen = [], set()
    for p, label in rows:
        full = p if os.path.isabs(p) else os.path.join(base, p)
        if p in seen:
            continue
        seen.add(p)
        items.append(Item(full, p, label or None))
    return items


def read_bytes(item: Item) -> bytes:
    """The file's bytes; an unreadable file (missing, permissions) is the image's failure."""
    try:
        with open(item.path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InputError(f"cannot read image {item.file!r}: {e.strerror or e}") from None
