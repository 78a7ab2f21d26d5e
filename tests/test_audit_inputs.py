"""Audit inputs (issue #11, items 9-13): resume fingerprints, overlay names, image value ranges,
symlinks, CSV injection and exit 2 for what is not an image's fault. Each failed on 0ab367c.

Reduced for speed: a 32 px ONNX CNN (5 classes), 2-4 images, 3 curve steps, Eigen-CAM.
"""
import csv
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from agnostic_cam.cli import main
from agnostic_cam.inputs.preprocess import Preprocess


@pytest.fixture(scope="module")
def model(onnx_net32):
    return onnx_net32  # one export for the whole session (conftest)


def _save(path: Path, seed: int, size: int = 32, fmt: str | None = None) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)


def _audit(model, images, out, *extra, methods="eigencam"):
    return main(["audit", str(model), str(images), "--out", str(out), "--steps", "3", "--no-progress",
                 "--methods", methods, *extra])


def _results(out):
    return json.loads((Path(out) / "results.json").read_text())


# -- item 9: resume fingerprints ------------------------------------------------------------------
def test_resume_sees_external_weights_and_image_content(model, tmp_path):
    imgs = tmp_path / "i"
    imgs.mkdir()
    for i in range(2):
        _save(imgs / f"im{i}.bmp", i, fmt="BMP")
    ext = tmp_path / "ext"
    ext.mkdir()
    m = onnx.load(str(model))
    onnx.save_model(m, str(ext / "net.onnx"), save_as_external_data=True, location="w.bin", size_threshold=512)
    out = tmp_path / "o"
    assert _audit(ext / "net.onnx", imgs, out) == 0
    # the weights file changes (the conv kernels, float32), net.onnx does not: everything is recomputed
    graph_bytes = (ext / "net.onnx").read_bytes()
    w = np.fromfile(ext / "w.bin", np.float32)
    (w * 1.5).astype(np.float32).tofile(ext / "w.bin")
    assert (ext / "net.onnx").read_bytes() == graph_bytes
    assert _audit(ext / "net.onnx", imgs, out) == 0
    assert sorted(_results(out)["run"]["computed"]) == ["im0.bmp", "im1.bmp"]
    # an image replaced by another of the same size and mtime is recomputed; the other is reused
    st = (imgs / "im1.bmp").stat()
    _save(imgs / "im1.bmp", 99, fmt="BMP")
    os.utime(imgs / "im1.bmp", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (imgs / "im1.bmp").stat().st_size == st.st_size
    assert _audit(ext / "net.onnx", imgs, out) == 0
    res = _results(out)
    assert res["run"]["computed"] == ["im1.bmp"] and res["run"]["reused"] == ["im0.bmp"]


# -- item 10: overlay names -----------------------------------------------------------------------
def test_overlay_names_unique_and_short(model, tmp_path):
    imgs = tmp_path / "i"
    imgs.mkdir()
    _save(imgs / "a.png", 1)
    _save(imgs / "a.jpg", 2)
    _save(imgs / "a.bmp", 3)
    long = "x" * 240 + ".png"
    _save(imgs / long, 4)
    out = tmp_path / "o"
    assert _audit(model, imgs, out) == 0
    res = _results(out)
    assert len(res["images"]) == 4
    files = [r["input"] for r in res["images"]] + [r["methods"]["eigencam"]["overlay"] for r in res["images"]]
    assert len(set(files)) == 8 and all(len(Path(f).name) < 100 for f in files)
    for r in res["images"]:                             # each overlay shows its own image
        shown = np.asarray(Image.open(out / r["input"]), np.int32)
        src = np.asarray(Image.open(imgs / r["file"]).convert("RGB"), np.int32)
        assert np.abs(shown - src).mean() < 1.0


# -- item 11: value ranges --------------------------------------------------------------------------
def test_images_read_by_their_real_value_range(tmp_path):
    pre = Preprocess(size=None)
    ramp16 = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)       # 0 .. 65280
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    got = pre.load(tmp_path / "g16.png")
    assert got.shape == (16, 16, 3) and np.allclose(got[..., 0], ramp16 / 65535 * 255, atol=1e-3)
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    assert np.allclose(pre.load(tmp_path / "f.tif")[..., 1], f * 255, atol=1e-3)
    Image.fromarray(f * 3, mode="F").save(tmp_path / "f3.tif")
    with pytest.raises(ValueError, match="0-1"):                       # InputError: no silent clipping
        pre.load(tmp_path / "f3.tif")
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert np.abs(pre.load(tmp_path / "c.jpg").astype(int) - rgb).mean() < 12
    rgba = np.dstack([rgb, np.full((8, 8), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(pre.load(tmp_path / "a.png"), rgb)                    # alpha dropped, colours kept
    Image.fromarray(rgb).quantize(16).save(tmp_path / "p.png")
    pal = Image.open(tmp_path / "p.png")
    assert pal.mode == "P" and np.array_equal(pre.load(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    Image.new("LA", (4, 4), (200, 0)).save(tmp_path / "la.png")
    assert (pre.load(tmp_path / "la.png") == 200).all()


def test_sixteen_bit_image_is_not_saturated_in_the_audit(model, tmp_path):
    imgs = tmp_path / "i"
    imgs.mkdir()
    Image.fromarray(np.full((32, 32), 20000, np.uint16)).save(imgs / "g16.png")
    Image.fromarray(np.full((32, 32, 3), round(20000 / 65535 * 255), np.uint8)).save(imgs / "g8.png")
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(imgs / "white.png")       # what saturation gives
    out = tmp_path / "o"
    assert _audit(model, imgs, out) == 0
    by = {r["file"]: r for r in _results(out)["images"]}
    assert (np.asarray(Image.open(out / by["g16.png"]["input"])) == 78).all()
    d8 = abs(by["g16.png"]["score"] - by["g8.png"]["score"])
    assert d8 < 1e-2 * abs(by["g16.png"]["score"] - by["white.png"]["score"])


# -- item 13: symlinks and CSV injection ------------------------------------------------------------
def test_symlinks_leaving_the_folder_refused_unless_allowed(model, tmp_path):
    imgs = tmp_path / "i"
    imgs.mkdir()
    _save(imgs / "in.png", 1)
    secret = tmp_path / "secret"
    secret.mkdir()
    _save(secret / "private.png", 2)
    os.symlink(secret / "private.png", imgs / "leak.png")
    os.symlink(imgs / "in.png", imgs / "alias.png")                    # inside the folder: fine
    out = tmp_path / "o"
    assert _audit(model, imgs, out) == 1
    res = _results(out)
    assert [f["file"] for f in res["run"]["failed"]] == ["leak.png"] and "symbolic link" in res["run"]["failed"][0]["error"]
    assert sorted(r["file"] for r in res["images"]) == ["alias.png", "in.png"]
    assert _audit(model, imgs, out, "--follow-symlinks") == 0
    assert len(_results(out)["images"]) == 3


def test_csv_cells_neutralised(model, tmp_path):
    imgs = tmp_path / "i"
    imgs.mkdir()
    names = ["=HYPERLINK(1).png", "+x.png", "-y.png", "@z.png"]
    for i, n in enumerate(names):
        _save(imgs / n, i)
    assert _audit(model, imgs, tmp_path / "o") == 0
    rows = list(csv.DictReader((tmp_path / "o" / "metrics.csv").open()))
    assert sorted(r["image"] for r in rows) == sorted("'" + n for n in names)
    assert all(r["image"][0] == "'" for r in rows)


# -- item 12: not the image's fault -> exit 2, one line, before any image ---------------------------
def _no_image_ran(out: Path) -> bool:
    return not list((out / ".audit").glob("*.json")) if (out / ".audit").exists() else True


@pytest.mark.parametrize("extra, expect", [
    (["--target", "99"], "out of range"),
    (["--methods", "gradcan"], "gradcam"),
    (["--boxes", "LIST"], "JSON object"),
    (["--boxes", "BAD"], "y0 < y1"),
])
def test_configuration_errors_exit_2_before_any_image(model, tmp_path, capsys, extra, expect):
    imgs = tmp_path / "i"
    imgs.mkdir()
    _save(imgs / "a.png", 1)
    (tmp_path / "list.json").write_text(json.dumps([[0, 0, 4, 4]]))
    (tmp_path / "bad.json").write_text(json.dumps({"a.png": [5, 0, 2, 4]}))
    extra = [{"LIST": str(tmp_path / "list.json"), "BAD": str(tmp_path / "bad.json")}.get(e, e) for e in extra]
    out = tmp_path / "o"
    assert _audit(model, imgs, out, *extra) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if "gradcan" in extra:
        assert "gradient backend" not in err and "did you mean" in err.lower()
    assert _no_image_ran(out)


@pytest.mark.parametrize("extra", [["--target", "-1"], ["--batch-size", "-3"], ["--steps", "0"]])
def test_bad_numbers_are_usage_errors(model, tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as e:
        _audit(model, tmp_path, tmp_path / "o", *extra)
    assert e.value.code == 2 and extra[0] in capsys.readouterr().err


def test_unconvertible_gradient_graph_and_nan_model_stop_once(model, tmp_path, capsys):
    imgs = tmp_path / "i"
    imgs.mkdir()
    for i in range(3):
        _save(imgs / f"{i}.png", i)
    m = onnx.load(str(model))
    y = m.graph.output[0].name
    m.graph.node.extend([helper.make_node("Hardmax", [y], ["hm"]), helper.make_node("Add", [y, "hm"], ["y2"])])
    m.graph.output[0].name = "y2"
    onnx.save(m, str(tmp_path / "hardmax.onnx"))
    assert _audit(tmp_path / "hardmax.onnx", imgs, tmp_path / "o", methods="eigencam,gradcam") == 2
    err = capsys.readouterr().err
    assert "gradcam" in err and "convert" in err and len(err.strip().splitlines()) == 1
    assert _no_image_ran(tmp_path / "o")
    m = onnx.load(str(model))
    w = next(t for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4)
    arr = numpy_helper.to_array(w).copy()
    arr.flat[0] = np.nan
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    onnx.save(m, str(tmp_path / "nan.onnx"))
    assert _audit(tmp_path / "nan.onnx", imgs, tmp_path / "o2") == 2
    err = capsys.readouterr().err
    assert "NaN" in err and _no_image_ran(tmp_path / "o2")


# -- issue #14: folder-tree and list input ----------------------------------------------------------
def test_folder_tree_gives_accuracy_per_class_and_lists_work(model, tmp_path):
    root = tmp_path / "tree"
    for c, label in enumerate(["cat", "dog"]):
        (root / label).mkdir(parents=True)
        for i in range(2):
            _save(root / label / f"{i}.png", 10 * c + i)
    _save(root / "loose.png", 50)                                      # top level: no folder label
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nfox\nowl\nelk\n")
    out = tmp_path / "o"
    assert _audit(model, root, out, "--labels", str(labels)) == 0
    res = _results(out)
    by = {r["file"]: r for r in res["images"]}
    assert sorted(by) == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png", "loose.png"]
    assert by["loose.png"]["true_label"] is None and by["dog/1.png"]["true_label"] == "dog"
    for label in ("cat", "dog"):
        mine = [r for r in res["images"] if r["true_label"] == label]
        assert res["classes"][label]["images"] == 2
        assert res["classes"][label]["accuracy"] == pytest.approx(np.mean([r["label"] == label for r in mine]))
    assert "Accuracy by folder label" in (out / "report.html").read_text()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["true_label"] for r in rows} == {"cat", "dog", ""}
    # the same images from a text list and from a CSV list (path,label), relative to the list's folder
    (tmp_path / "list.txt").write_text("# two images\ntree/cat/0.png\n\ntree/dog/1.png\n")
    assert _audit(model, tmp_path / "list.txt", tmp_path / "o2") == 0
    res2 = _results(tmp_path / "o2")
    assert [r["file"] for r in res2["images"]] == ["tree/cat/0.png", "tree/dog/1.png"]
    assert res2["images"][0]["methods"]["eigencam"]["deletion_auc"] == pytest.approx(
        by["cat/0.png"]["methods"]["eigencam"]["deletion_auc"], abs=1e-5)
    (tmp_path / "list.csv").write_text(f"path,label\n{root / 'cat' / '1.png'},cat\ntree/dog/0.png,dog\n")
    assert _audit(model, tmp_path / "list.csv", tmp_path / "o3", "--labels", str(labels)) == 0
    res3 = _results(tmp_path / "o3")
    assert {r["true_label"] for r in res3["images"]} == {"cat", "dog"} and set(res3["classes"]) == {"cat", "dog"}
