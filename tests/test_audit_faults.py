"""The audit under faults (issue #11, items 7-13): each test failed on commit 0ab367c.

Reduced for speed: a 32 px ONNX CNN (5 classes), 3-6 images of 32-40 px, 3-5 curve steps.
"""
import csv
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from PIL import Image

from agnostic_cam.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net(tmp_path_factory, torch):
    from onnx_helpers import export_torch, torch_net

    d = tmp_path_factory.mktemp("models")
    paths = {}
    for name, kw in (("logits", {}), ("softmax", {"softmax": True})):
        paths[name] = d / f"{name}.onnx"
        onnx.save(export_torch(torch_net(seed=4, **kw), 32), str(paths[name]))
    return paths


def _images(d: Path, n: int = 3, size: int = 32, names=None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i, name in enumerate(names or [f"img{i}.png" for i in range(n)]):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / name)
    return d


def _audit(model, images, out, *extra, methods="eigencam"):
    return main(["audit", str(model), str(images), "--out", str(out), "--steps", "3", "--no-progress",
                 "--methods", methods, *extra])


def _results(out):
    return json.loads((Path(out) / "results.json").read_text())


# -- item 7: a model that ends in Softmax --------------------------------------------------------
def test_final_softmax_is_not_applied_twice(net, tmp_path):
    import onnxruntime as ort

    from agnostic_cam import Explainer

    from agnostic_cam.evaluation import metrics
    imgs = _images(tmp_path / "i", 2)
    assert _audit(net["softmax"], imgs, tmp_path / "o") == 0
    res = _results(tmp_path / "o")
    assert res["score"] == "raw"
    sess = ort.InferenceSession(str(net["softmax"]))
    ex = Explainer.from_onnx(str(net["softmax"]), progress=False)
    for r in res["images"]:
        x = np.asarray(Image.open(imgs / r["file"]), np.float32).transpose(2, 0, 1)[None] / 255
        p = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
        assert r["probability"] == pytest.approx(float(p.max()), abs=1e-6)      # the model's own probability
        heat = ex.explain(x, "eigencam", target=r["class"]).heatmap
        ins = metrics.insertion_auc(ex, x, heat, r["class"], steps=3, score="raw", progress=False)[0]
        assert r["methods"]["eigencam"]["insertion_auc"] == pytest.approx(float(ins), abs=1e-6)


# -- item 8: faults that must not kill the run ----------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(path: Path, side: int = 14000) -> None:
    """A ~25 KB bilevel PNG that decodes to side x side pixels (over twice Pillow's pixel limit)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))


def test_bomb_and_non_utf8_names_fail_alone_and_report_is_written(net, tmp_path, capsys):
    imgs = _images(tmp_path / "i", 2)
    _bomb_png(imgs / "bomb.png")
    assert (imgs / "bomb.png").stat().st_size < 100_000
    odd = os.path.join(os.fsencode(imgs), b"caf\xe9.png")                   # not UTF-8
    Image.new("RGB", (32, 32), (10, 200, 30)).save(odd, format="PNG")
    assert _audit(net["logits"], imgs, tmp_path / "o") == 1
    err = capsys.readouterr().err
    assert "bomb.png" in err and "Traceback" not in err
    res = _results(tmp_path / "o")
    assert [f["file"] for f in res["run"]["failed"]] == ["bomb.png"] and "bomb" in res["run"]["failed"][0]["error"]
    assert sorted(r["file"] for r in res["images"]) == ["caf\ufffd.png", "img0.png", "img1.png"]
    assert "caf\ufffd.png" in (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    assert "caf\ufffd.png" in (tmp_path / "o" / "metrics.csv").read_text(encoding="utf-8")
    assert _audit(net["logits"], imgs, tmp_path / "o", "--max-pixels", "500") == 1   # option: a lower limit
    assert len(_results(tmp_path / "o")["run"]["failed"]) == 4


def _tmp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if ".tmp" in p.name]


def test_write_failure_is_clear_leaves_no_temp_files_and_is_not_cached(net, tmp_path):
    """A real write failure: the audit runs with a 1500-byte file-size limit (EFBIG, like a full disk)."""
    imgs = _images(tmp_path / "i", 3)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "agnostic_cam.cli", "audit", str(net["logits"]), str(imgs), "--out", str(out),
           "--steps", "3", "--no-progress", "--methods", "eigencam"]

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=limit, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and "cannot write" in r.stderr and "rerun" in r.stderr
    assert _tmp_files(out) == []
    assert _audit(net["logits"], imgs, out) == 0                            # the write failure was not cached
    res = _results(out)
    assert res["run"]["failed"] == [] and len(res["images"]) == 3 and _tmp_files(out) == []


def test_deleted_overlay_is_recomputed_on_resume(net, tmp_path):
    imgs = _images(tmp_path / "i", 3)
    out = tmp_path / "o"
    assert _audit(net["logits"], imgs, out) == 0
    rec = next(r for r in _results(out)["images"] if r["file"] == "img1.png")
    (out / rec["input"]).unlink()
    assert _audit(net["logits"], imgs, out) == 0
    res = _results(out)
    assert res["run"]["computed"] == ["img1.png"] and (out / rec["input"]).is_file()
    (out / res["images"][0]["methods"]["eigencam"]["overlay"]).unlink()
    assert _audit(net["logits"], imgs, out) == 0
    assert _results(out)["run"]["computed"] == ["img0.png"]


def test_ctrl_c_writes_partial_report_and_says_rerun(net, tmp_path):
    # reduced from 100 images: the rerun below computes every image the interrupted run left, and that
    # was most of this test's time; at about 20 ms an image (scorecam, 20 steps) the child still has 39
    # images (the better part of a second) to go when SIGINT comes, 10 ms after its first record
    n = 40
    imgs = _images(tmp_path / "i", n)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "agnostic_cam.cli", "audit", str(net["logits"]), str(imgs), "--out", str(out),
           "--steps", "20", "--no-progress", "--methods", "scorecam", "--batch-images", "1"]
    # The child gets SIGINT's default disposition, as from a terminal: a suite started in the background
    # (`cmd &` in a script) ignores SIGINT, and children inherit an ignored signal.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / ".audit").glob("*.json")):
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("metrics: ")]  # but the start line
    assert len(lines) == 1 and "rerun" in lines[0].lower() and "Traceback" not in err
    res = _results(out)
    done = len(res["images"])
    assert res["run"]["interrupted"] and 1 <= done < n and (out / "report.html").is_file()
    assert "resume" in (out / "report.html").read_text()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    res2 = _results(out)
    assert len(res2["run"]["reused"]) >= done and len(res2["images"]) == n
