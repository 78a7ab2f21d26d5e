"""Where records and their files live under ``OUT``, and what a rerun may reuse (resume).

``OUT/.audit/<key>.json`` is an image's record; ``OUT/overlays/`` its PNG files. A record is
reused only when the run's fingerprint (model file and its external weights, settings) and the
image's content hash match and every file it names still exists; otherwise the image is computed
again. Files are written before the record, each atomically, so a killed run leaves no record
that points to a missing file. Write failures are never recorded as image failures.
"""
from __future__ import annotations

import json
from pathlib import Path

from agnostic_cam.audit.record import Result
from agnostic_cam.audit.sources import Item
from agnostic_cam.audit_files import atomic_write, check_writable


class Store:
    def __init__(self, out: str | Path, fingerprint: str, resume: bool = True):
        self.out, self.fingerprint, self.resume = Path(out), fingerprint, resume
        self.state = self.out / ".audit"
        check_writable(self.out)
        for d in (self.state, self.out / "overlays"):
            d.mkdir(exist_ok=True)

    def _path(self, item: Item) -> Path:
        return self.state / f"{item.key}.json"

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
        files = [rec.get("input")] + [m.get("overlay") for m in rec.get("methods", {}).values()]
        if "error" not in rec and not all(f and (self.out / f).is_file() for f in files):
            return None
        return rec

    def save(self, result: Result) -> dict:
        """Write the files, then the record (its commit point). Raises OutputError when the disk refuses."""
        for rel, data in result.files.items():
            atomic_write(self.out / rel, data)
        if result.record.get("sha") is not None:  # an unreadable file has no content to key a reuse on
            atomic_write(self._path_for(result.record), json.dumps(result.record))
        return result.record

    def _path_for(self, record: dict) -> Path:
        return self.state / f"{record['key']}.json"
