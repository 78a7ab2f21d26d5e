"""atomic_write: readers see the old file or the new one, and no temporary file is ever left behind."""
from __future__ import annotations

import threading

import pytest

from agnostic_cam.audit.files import OutputError, atomic_write


def test_replaces_and_leaves_nothing(tmp_path):
    p = tmp_path / "report.html"
    atomic_write(p, "old")
    atomic_write(p, b"new")
    assert p.read_bytes() == b"new" and sorted(x.name for x in tmp_path.iterdir()) == ["report.html"]


def test_failure_keeps_old_file_and_removes_temporary(tmp_path):
    p = tmp_path / "metrics.csv"
    atomic_write(p, "old")
    with pytest.raises(TypeError):
        atomic_write(p, 12345)  # not bytes/str: fails while writing the temporary file
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["metrics.csv"]
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write(tmp_path / "missing_dir" / "x.csv", "data")
    assert [x.name for x in tmp_path.iterdir()] == ["metrics.csv"]


def test_concurrent_writers_to_one_path(tmp_path):
    p = tmp_path / "results.json"
    payloads = [str(i) * 50_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write, args=(p, d)) for d in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.read_text() in payloads and [x.name for x in tmp_path.iterdir()] == ["results.json"]
