"""End-to-end tests of the ``agnostic-cam`` command (layers, explain, audit with resume)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from agnostic_cam.audit import record as record_mod
from agnostic_cam.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, torch):
    from onnx_helpers import export_torch, torch_net

    p = tmp_path_factory.mktemp("model") / "net.onnx"
    onnx.save(export_torch(torch_net(), 32), str(p))
    return p


@pytest.fixture
def image_dir(tmp_path):
    from agnostic_cam.demo.data import make_shapes

    d = tmp_path / "images"
    d.mkdir()
    x, _, boxes = make_shapes(3, size=40, seed=3, layout="NHWC")
    for i in range(3):
        Image.fromarray((x[i] * 255).astype(np.uint8)).save(d / f"img{i}.png")
    Image.fromarray((x[0, :36] * 255).astype(np.uint8)).save(d / "tall.jpg")      # another size: resized
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")                 # unreadable
    (d / "notes.txt").write_text("not an image, ignored")
    # boxes for the pointing game, scaled from the 40 px images to the model's 32 px input
    (tmp_path / "boxes.json").write_text(json.dumps({f"img{i}.png": (boxes[i] * 32 // 40).tolist() for i in range(3)}))
    return d


def _audit(model_path, image_dir, out, *extra):
    return main(["audit", str(model_path), str(image_dir), "--out", str(out), "--steps", "5", "--no-progress",
                 "--methods", "scorecam,gradcam", "--boxes", str(image_dir.parent / "boxes.json"), *extra])


def test_audit_end_to_end_with_corrupt_image_and_resume(model_path, image_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _audit(model_path, image_dir, out) == 1                       # some image failed -> exit code 1
    err = capsys.readouterr().err
    assert "corrupt.png" in err

    res = json.loads((out / "results.json").read_text())
    assert sorted(res["run"]["computed"]) == ["corrupt.png", "img0.png", "img1.png", "img2.png", "tall.jpg"]
    assert [f["file"] for f in res["run"]["failed"]] == ["corrupt.png"]
    assert res["layer"] == "/feat/Relu_output_0" and res["layout"] == "NCHW"

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 4 * 2 and {r["method"] for r in rows} == {"scorecam", "gradcam"}
    by_key = {(r["file"], m): row for r in res["images"] for m, row in r["methods"].items()}
    for r in rows:
        row = by_key[(r["image"], r["method"])]
        for col in ("deletion_auc", "insertion_auc", "drop_pct"):
            assert float(r[col]) == pytest.approx(row[col], rel=1e-5)
            assert 0 <= row[col] <= (100 if col == "drop_pct" else 1)
        assert (r["pointing_hit"] == "") == (r["image"] == "tall.jpg")   # no box given for it
    for m in ("scorecam", "gradcam"):                                     # summary = mean over images
        vals = [by_key[(f, m)]["deletion_auc"] for f in ("img0.png", "img1.png", "img2.png", "tall.jpg")]
        assert res["summary"][m]["deletion_auc"] == pytest.approx(np.mean(vals))
        assert res["summary"][m]["images"] == 4

    html = (out / "report.html").read_text()
    assert "corrupt.png" in html and "could not be read" in html
    assert html.count("data:image/png;base64,") == 4 * 3                  # input + 2 overlays per image
    assert "Deletion AUC" in html and "Pointing game" in html
    assert not list(out.glob(".*.tmp*")) and not list((out / "overlays").glob(".*.tmp*"))

    # resumed run: nothing is recomputed, outputs are the same
    before = (out / "metrics.csv").read_text()

    def boom(*a, **k):
        raise AssertionError("an image was recomputed on resume")

    monkeypatch.setattr(record_mod, "compute_records", boom)
    assert _audit(model_path, image_dir, out) == 1
    res2 = json.loads((out / "results.json").read_text())
    assert res2["run"]["computed"] == [] and len(res2["run"]["reused"]) == 5
    assert [f["file"] for f in res2["run"]["failed"]] == ["corrupt.png"]
    assert (out / "metrics.csv").read_text() == before
    monkeypatch.undo()

    # a changed image is recomputed, the others are not
    img = np.asarray(Image.open(image_dir / "img1.png")).copy()
    img[:4] = 0
    Image.fromarray(img).save(image_dir / "img1.png")
    os.utime(image_dir / "img1.png", ns=(1, 1))
    (image_dir / "corrupt.png").unlink()
    assert _audit(model_path, image_dir, out) == 0                       # no failure left -> exit code 0
    res3 = json.loads((out / "results.json").read_text())
    assert res3["run"]["computed"] == ["img1.png"] and res3["run"]["failed"] == []


def test_audit_bad_input(model_path, image_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["audit", str(model_path), str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["audit", str(model_path), str(image_dir), "--out", str(blocker / "sub")]) == 2
    assert "cannot write to the output directory" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model_path.read_bytes()[:200])                        # truncated
    assert main(["audit", str(bad), str(image_dir), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert main(["audit", str(model_path), str(image_dir), "--out", str(tmp_path / "o"), "--methods", "gradcan"]) == 2
    assert "gradcan" in capsys.readouterr().err
    # --size none with 40 px images and a 32 px model: the options' fault, stopped before any image runs
    assert main(["audit", str(model_path), str(image_dir), "--out", str(tmp_path / "o2"), "--size", "none"]) == 2
    err = capsys.readouterr().err
    assert "40x40" in err and "32x32" in err and "--size none" in err and err.count("\n") == 1
    assert not (tmp_path / "o2" / "results.json").exists()


def test_layers_and_explain_commands(model_path, image_dir, tmp_path, capsys):
    assert main(["layers", str(model_path)]) == 0
    text = capsys.readouterr().out
    assert "/conv1/Conv_output_0" in text and "default target layer: /feat/Relu_output_0" in text and "1x12x16x16" in text
    out = tmp_path / "ex"
    assert main(["explain", str(model_path), str(image_dir / "img0.png"), str(image_dir / "tall.jpg"),
                 "--method", "eigencam", "--out", str(out), "--layer", "/conv2/Conv_output_0"]) == 0
    for stem, shape in (("img0", (40, 40, 3)), ("tall", (36, 40, 3))):  # the image's own size, not the model's 32x32
        im = np.asarray(Image.open(out / f"{stem}_eigencam.png"))
        assert im.shape == shape and im.dtype == np.uint8
    assert main(["explain", str(model_path), str(image_dir / "img0.png"), "--out", str(out), "--layer", "nope"]) == 2
    assert "no tensor or node named 'nope'" in capsys.readouterr().err


def test_help_on_every_command(capsys):
    """The entry point ``python -m agnostic_cam.cli --help`` in a fresh interpreter, then each sub-command's
    --help from the same ``main`` in this process (reduced from one interpreter per command: a start,
    about 0.8 s, is what each cost, and the parser they read is the same)."""
    r = subprocess.run([sys.executable, "-m", "agnostic_cam.cli", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "usage: agnostic-cam" in r.stdout and "audit" in r.stdout
    for cmd in (["layers"], ["explain"], ["audit"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([*cmd, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and f"usage: agnostic-cam {cmd[0]}" in out, out[-2000:]
        if cmd == ["audit"]:
            assert "--methods" in out and "resume" in out
