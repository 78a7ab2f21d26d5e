"""The audit's result files built from records that arrive one at a time.

Each piece here takes one record (:meth:`add`) and keeps a bounded state, so writing the files of a
million images holds a few hundred records at most (the report's sample), not one per image:
:class:`Summary` (results.json's ``summary`` and ``classes``), :class:`Sample` (the records the
report shows), :class:`ParquetRows` (metrics.parquet, row group by row group) and
:class:`ImagesJson` (results.json's ``images`` list, spooled to a nameless temporary file).
"""
from __future__ import annotations

import hashlib
import heapq
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import IO

from agnostic_cam.audit.files import METRIC_COLUMNS, write_error


class ExactSum:
    """A sum of floats without rounding error, one value at a time (Shewchuk's partials, as
    ``math.fsum``): the mean of a million metrics does not depend on their order. Inf/NaN
    propagate as in a plain sum."""

    __slots__ = ("partials", "special")

    def __init__(self):
        self.partials: list[float] = []
        self.special = 0.0  # the sum of the non-finite values added

    def add(self, x: float) -> None:
        x = float(x)
        if not math.isfinite(x):
            self.special += x
            return
        i = 0
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                self.partials[i] = lo
                i += 1
            x = hi
        self.partials[i:] = [x]

    def value(self) -> float:
        return self.special if self.special != 0 else math.fsum(self.partials)


class Summary:
    """Per method: images, the mean of each metric over the images that have it (None when none),
    ``counts`` (images per mean) and ``degenerate`` (maps flagged); per true label (folder-tree
    input): images and top-1 accuracy."""

    def __init__(self, methods: list[str]):
        self.methods = list(methods)
        self.images = dict.fromkeys(self.methods, 0)
        self.sums = {m: {c: ExactSum() for c in METRIC_COLUMNS} for m in self.methods}
        self.counts = {m: dict.fromkeys(METRIC_COLUMNS, 0) for m in self.methods}
        self.degenerate = dict.fromkeys(self.methods, 0)
        self._classes: dict[str, dict] = {}

    def add(self, r: dict) -> None:
        for m in self.methods:
            row = r["methods"].get(m)
            if row is None:
                continue
            self.images[m] += 1
            for c in METRIC_COLUMNS:
                if row.get(c) is not None:
                    self.sums[m][c].add(row[c])
                    self.counts[m][c] += 1
            self.degenerate[m] += bool(row.get("degenerate"))
        t = r.get("true_label")
        if t is not None:
            s = self._classes.setdefault(t, {"images": 0, "correct": 0})
            s["images"] += 1
            s["correct"] += int(r["label"] == t)

    def summary(self) -> dict[str, dict]:
        out = {}
        for m in self.methods:
            n = self.counts[m]
            out[m] = {"images": self.images[m],
                      **{c: self.sums[m][c].value() / n[c] if n[c] else None for c in METRIC_COLUMNS},
                      "counts": dict(n), "degenerate": self.degenerate[m]}
        return out

    def classes(self) -> dict[str, dict]:
        return {t: {**s, "accuracy": s["correct"] / s["images"]} for t, s in sorted(self._classes.items())}


def _keep(heap: list, key: tuple, i: int, r: dict, size: int) -> None:
    """Keep in ``heap`` the ``size`` entries with the largest ``key`` (keys are unique: they end in ±i)."""
    if len(heap) < size:
        heapq.heappush(heap, (key, i, r))
    elif size and key > heap[0][0]:
        heapq.heapreplace(heap, (key, i, r))


class Sample:
    """The report's images: at most ``limit`` records, in their order. Per method the ``per`` best
    and worst deletion AUC first (ties: the earlier record is the better, as a stable sort; a
    missing or NaN AUC counts as the worst), then a random rest: the records whose hash of
    (``seed``, image key) is smallest, so a rerun, a resumed run or another engine picks the same.
    Holds at most ``limit`` + 2 ``per`` records per method."""

    def __init__(self, methods: list[str], limit: int, seed: str = ""):
        self.limit, self.seed, self.n = limit, seed.encode(), 0
        self.per = max(1, limit // (4 * max(1, len(methods))))
        self.best: dict[str, list] = {m: [] for m in methods}
        self.worst: dict[str, list] = {m: [] for m in methods}
        self.rand: list = []

    def add(self, r: dict) -> None:
        i, self.n = self.n, self.n + 1
        for m in self.best:
            row = r["methods"].get(m)
            if row is None:
                continue
            a = row.get("deletion_auc")
            flag, a = (1, 0.0) if a is None or math.isnan(a) else (0, a)
            _keep(self.best[m], (-flag, -a, -i), i, r, self.per)  # the `per` smallest (flag, auc, i)
            _keep(self.worst[m], (flag, a, i), i, r, self.per)    # the `per` largest
        h = int.from_bytes(hashlib.blake2b(r["key"].encode(), digest_size=8, key=self.seed[:64]).digest(), "big")
        _keep(self.rand, (-h, -i), i, r, self.limit)  # the `limit` smallest hashes

    def records(self) -> list[dict]:
        if self.n <= self.limit:  # every record is in self.rand
            return [r for _, i, r in sorted(self.rand, key=lambda e: e[1])]
        chosen = {i: r for heaps in (self.best, self.worst) for heap in heaps.values() for _, i, r in heap}
        rest = [(i, r) for _, i, r in sorted(self.rand, reverse=True) if i not in chosen]
        chosen.update(rest[:max(0, self.limit - len(chosen))])
        return [chosen[i] for i in sorted(chosen)][:self.limit]


class ParquetRows:
    """metrics.parquet written to ``f``: the CSV's rows with typed columns, ``group`` rows per row
    group (needs pyarrow, part of the [ray] extra). A context manager: its end writes the footer."""

    def __init__(self, f: IO[bytes], group: int = 8192):
        from agnostic_cam.audit.engines.ray import require

        require("pyarrow", "--format parquet")
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.group = pa, group
        self.schema = pa.schema([("image", pa.string()), ("method", pa.string()), ("class", pa.int64()),
                                 ("label", pa.string()), ("true_label", pa.string()), ("score", pa.float64()),
                                 ("probability", pa.float64()), *((c, pa.float64()) for c in METRIC_COLUMNS),
                                 ("task", pa.string()), ("target", pa.string())])
        self.writer = pq.ParquetWriter(f, self.schema)
        self.cols: dict[str, list] = {n: [] for n in self.schema.names}

    def add(self, r: dict) -> None:
        cols = self.cols
        for m, row in r["methods"].items():
            for name, v in (("image", r["file"]), ("method", m), ("class", r["class"]), ("label", r["label"]),
                            ("true_label", r.get("true_label")), ("score", r["score"]),
                            ("probability", r["probability"]), ("task", r.get("task", "classify")),
                            ("target", r.get("target", f"class {r['class']}"))):
                cols[name].append(v)
            for c in METRIC_COLUMNS:
                cols[c].append(row.get(c))
        if len(cols["image"]) >= self.group:
            self._flush()

    def _flush(self) -> None:
        if self.cols["image"]:
            self.writer.write_table(self.pa.Table.from_pydict(self.cols, schema=self.schema))
            self.cols = {n: [] for n in self.schema.names}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self._flush()
            self.writer.close()
            return
        try:  # failing anyway (the temporary file goes): closed now, not by pyarrow at exit into a closed file
            self.writer.close()
        except Exception:  # noqa: BLE001 - the error being raised is the one that matters
            pass


class ImagesJson:
    """results.json's ``"images"`` list, spooled record by record to a nameless temporary file in
    ``out`` (gone when closed, even after a kill); :meth:`write` writes results.json's text with
    that list, the same text as ``json.dumps(results, indent=1)``. A context manager."""

    def __init__(self, out: Path):
        self.path = Path(out) / "results.json"  # named in errors
        self.n = 0
        try:
            self.spool = tempfile.TemporaryFile(dir=out)
        except OSError as e:
            raise write_error(self.path, e) from e

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.spool.close()
        except OSError:  # flushing its buffer failed (disk full): its content is not needed any more
            pass

    def add(self, r: dict) -> None:
        text = ("  " if not self.n else ",\n  ") + json.dumps(r, indent=1).replace("\n", "\n  ")
        self.n += 1
        try:
            self.spool.write(text.encode("ascii"))  # json.dumps escapes every non-ASCII character
        except OSError as e:
            raise write_error(self.path, e) from e

    def write(self, results: dict, f: IO[bytes]) -> None:
        """``results`` (whose last key is "images") as JSON to ``f``, the spooled records as "images"."""
        head = json.dumps({**results, "images": []}, indent=1)
        assert list(results)[-1] == "images" and head.endswith('"images": []\n}')
        if not self.n:
            f.write(head.encode("ascii"))
            return
        f.write(head[:-len("[]\n}")].encode("ascii") + b"[\n")
        self.spool.flush()
        self.spool.seek(0)
        shutil.copyfileobj(self.spool, f, 1 << 20)
        f.write(b"\n ]\n}")
