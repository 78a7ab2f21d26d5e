"""The Ray engine on a real local Ray (``ray.init(num_cpus=2)``, no mocks), issue #14.

Reduced for speed: a 32 px ONNX CNN, 12 random images, forward methods only (the workers then
need no torch), 3-10 curve steps; one Ray start for this module and tests/test_compare.py's Ray test
(conftest's ``ray_cluster``: the two modules run in one worker, one after the other).
"""
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import pyarrow.parquet as pq
import ray  # noqa: F401 - a real Ray is what these tests run on (conftest.ray_cluster starts it)
from PIL import Image

from agnostic_cam import audit


@pytest.fixture(scope="module")
def model(onnx_net32):
    return onnx_net32  # one export for the whole session (conftest)


def _images(d: Path, n: int) -> Path:
    d.mkdir()
    rng = np.random.default_rng(5)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"im{i:02d}.png")
    return d


def _by_file(res):
    return {r["file"]: r for r in res["images"]}


def _actor_pids() -> list[int]:
    """This session's audit actors only: descendants of this process (``ray.init`` here started the
    raylet that spawns them), never another process on the machine that happens to have the name."""
    import psutil

    ours = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "AuditWorker" in " ".join(p.cmdline()):
                ours.append(p.pid)
        except psutil.Error:  # gone meanwhile
            pass
    return ours


def _kill_a_worker(out: Path, after: int, done: threading.Event, killed: list) -> None:
    """SIGKILL one audit actor once ``after`` records are on disk (until ``done``: the run ended)."""
    while not done.is_set():
        if len(list((out / ".audit").glob("*.json"))) >= after and _actor_pids():
            pid = _actor_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


def test_ray_equals_local_with_a_killed_worker_parquet_bounded_report_and_resume(ray_cluster, model, tmp_path):
    """One Ray run checks both claims (each run starts its actors and Ray Data's pipeline: about 5 s idle,
    20 s under the suite's load): a worker killed after 2 records loses and repeats nothing, and every
    record equals the local engine's."""
    imgs = _images(tmp_path / "i", 12)  # the kill comes after 2 records: 10 are left to lose or repeat
    kw = {"steps": 10, "progress": False}
    local = _by_file(audit.run(model, imgs, tmp_path / "local", ["eigencam", "scorecam"], **kw))
    out = tmp_path / "ray"
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_worker, args=(out, 2, done, killed))
    killer.start()
    try:
        res = audit.run(model, imgs, out, ["eigencam", "scorecam"], engine="ray", workers=2, batch_images=2,
                        format="parquet", report_images=3, **kw)
    finally:
        done.set()
        killer.join()
    assert killed, "no worker was killed"
    assert res["engine"]["name"] == "ray" and res["engine"]["workers"] == 2 and res["run"]["failed"] == []
    assert sorted(res["run"]["computed"]) == sorted(local) and len(res["run"]["computed"]) == 12
    assert len(list((out / ".audit").glob("*.json"))) == 12
    assert json.loads((out / "results.json").read_text())["run"]["explained"] == 12
    rows = pq.read_table(out / "metrics.parquet").to_pylist()
    assert len(rows) == 24 and {r["image"] for r in rows} == set(local)
    for r in rows:
        ref = local[r["image"]]
        assert r["class"] == ref["class"]
        for col in ("deletion_auc", "insertion_auc", "drop_pct", "increase"):
            assert r[col] == pytest.approx(ref["methods"][r["method"]][col], abs=1e-5)
    ecam = [r for r in rows if r["method"] == "eigencam"]
    assert res["summary"]["eigencam"]["deletion_auc"] == pytest.approx(np.mean([r["deletion_auc"] for r in ecam]))
    html = (out / "report.html").read_text()            # every image summarised, 3 shown (input + 2 overlays)
    assert html.count("data:image/png;base64,") == 3 * 3 and "12 images explained" in html
    assert max(ecam, key=lambda r: r["deletion_auc"])["image"] in html
    assert min(ecam, key=lambda r: r["deletion_auc"])["image"] in html
    again = audit.run(model, imgs, out, ["eigencam", "scorecam"], engine="ray", workers=2, **kw)
    assert again["run"]["computed"] == [] and len(again["run"]["reused"]) == 12
    # the local engine resumes the Ray run (and vice versa): records are the same whatever ran them
    key = next(r["key"] for r in again["images"] if r["file"] == "im03.png")
    (out / ".audit" / f"{key}.json").unlink()
    loc = audit.run(model, imgs, out, ["eigencam", "scorecam"], **kw)
    assert loc["run"]["computed"] == ["im03.png"] and len(loc["run"]["reused"]) == 11


def test_missing_ray_names_the_extra(model, tmp_path):
    import subprocess
    import sys

    imgs = _images(tmp_path / "i", 1)
    code = ("import sys; sys.modules['ray'] = None\n"
            "from agnostic_cam.cli import main\n"
            f"sys.exit(main(['audit', {str(model)!r}, {str(imgs)!r}, '--out', {str(tmp_path / 'o')!r}, "
            "'--engine', 'ray', '--no-progress']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 2 and "pip install 'agnostic-cam[ray]'" in r.stderr and "Traceback" not in r.stderr
    assert not list((tmp_path / "o" / ".audit").glob("*.json"))
