"""Where records and their files live under ``OUT``, and what a rerun may reuse (resume).

``OUT/.audit/<key>.json`` is an image's record; ``OUT/overlays/`` its PNG files. A record is
reused only when the run's fingerprint (model file and its external weights, settings) and the
image's content hash match and every file it names still exists; otherwise the image is computed
again. Files are written before the record, each atomically, so a killed run leaves no record
that points to a missing file. Write failures are never recorded as image failures.
:class:`StoredRecords` reads records back one at a time, for the result files.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from agnostic_cam.audit.record import Result
from agnostic_cam.audit.sources import Item
from agnostic_cam.audit.files import OutputError, atomic_write, check_writable, display


class Store:
    def __init__(self, out: str | Path, fingerprint: str, resume: bool = True):
        self.out, self.fingerprint, self.resume = Path(out), fingerprint, resume
        self.state = self.out / ".audit"
        check_writable(self.out)
        for d in (self.state, self.out / "overlays"):
            d.mkdir(exist_ok=True)

    def _path(self, item: Item) -> Path:
        return self._key_path(item.key)

    def _key_path(self, key: str) -> Path:
        return self.state / f"{key}.json"

    def cached(self, item: Item, sha: str) -> dict | None:
        """The record of ``item`` from an earlier run when still valid for content ``sha``, else None."""
        if not self.resume:
            return None
        try:
            rec = json.loads(self._path(item).read_text())
        except (OSError, ValueError):
            return None
        if rec.get("fingerprint") != self.fingerprint or rec.get("sha") != sha or rec.get("rel") != item.rel:
            return None
        files = [rec.get("input")] + [m.get("overlay") for row in [rec, *rec.get("rows", [])]  # multi-label: per row
                                      for m in row.get("methods", {}).values()]
        if "error" not in rec and not all(f and (self.out / f).is_file() for f in files):
            return None
        return rec

    def save(self, result: Result) -> dict:
        """Write the files, then the record (its commit point). Raises OutputError when the disk refuses."""
        for rel, data in result.files.items():
            atomic_write(self.out / rel, data)
        if result.record.get("sha") is not None:  # an unreadable file has no content to key a reuse on
            atomic_write(self._key_path(result.record["key"]), json.dumps(result.record))
        return result.record

    def load(self, key: str) -> dict:
        """The record saved under ``key`` (this run wrote or checked it); OutputError when it is gone."""
        path = self._key_path(key)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise OutputError(f"cannot read the audit record {display(str(path))} back: {e}. Was {self.out} "
                              "changed during the run? Rerun the same command: finished images are reused") from e


class StoredRecords(Sequence):
    """The records of ``keys`` as a read-only sequence that loads each from ``store`` when asked for,
    so going through a million of them holds one at a time (``list()`` it to keep them all)."""

    def __init__(self, store: Store, keys: list[str]):
        self.store, self.keys = store, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.store.load(k) for k in self.keys[i]]
        return self.store.load(self.keys[i])

    def __iter__(self):
        return map(self.store.load, self.keys)

    def __repr__(self) -> str:
        return f"<{len(self)} audit records in {self.store.state}>"
