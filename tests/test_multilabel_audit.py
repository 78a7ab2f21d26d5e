"""``agnostic-cam audit --task multilabel`` end to end on a tiny sigmoid-head ONNX classifier (32 px,
three images): one metrics row per (image, present class, method); the present classes, scores and
probabilities are recomputed here on ONNX Runtime's output, and each row's deletion / insertion AUC
equals the curve of that class's output under the map ``explain(image, target=class)`` gives."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from agnostic_cam import Explainer, audit
from agnostic_cam.cli import main
from agnostic_cam.errors import OptionError
from agnostic_cam.evaluation import metrics


@pytest.fixture
def model(torch, tmp_path):
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5), nn.Sigmoid()).eval()
    path = tmp_path / "ml.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(path), dynamo=False, input_names=["images"],
                      output_names=["probs"], dynamic_axes={"images": {0: "n"}, "probs": {0: "n"}})
    return path


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(3)
    for j, name in enumerate("abc"):
        img = rng.integers(0, 256, (32, 32, 3)) * (j + 1) // 3  # different brightness, different classes
        Image.fromarray(img.astype(np.uint8)).save(d / f"{name}.png")
    return d


def inputs(img) -> np.ndarray:
    """One image file as the audit's default preprocessing gives it (RGB, 0-1, NCHW)."""
    return (np.asarray(Image.open(img).convert("RGB"), np.float32) / 255).transpose(2, 0, 1)[None]


def probs(path, img) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": inputs(img)})[0][0]


def test_threshold_audit_scores_every_present_class(model, images, tmp_path):
    p = {f"{k}.png": probs(model, images / f"{k}.png").astype(np.float64) for k in "abc"}
    v = np.sort(np.concatenate(list(p.values())))  # a threshold at the widest gap among the middle probabilities
    i = 5 + int(np.argmax(np.diff(v[5:11])))
    threshold = float(v[i] + v[i + 1]) / 2
    out = tmp_path / "o"
    rc = main(["-q", "audit", str(model), str(images), "--out", str(out), "--task", "multilabel", "--threshold",
               str(threshold), "--methods", "gradcam,scorecam", "--steps", "4", "--no-progress"])
    assert rc == 0
    got = list(csv.DictReader((out / "metrics.csv").open()))
    want = {(f, int(c)) for f, v in p.items() for c in np.flatnonzero(v >= threshold)}
    assert len(want) >= 3 and len({f for f, _ in want}) >= 2
    assert {(r["image"], int(r["class"])) for r in got} == want and len(got) == 2 * len(want)
    ex = Explainer.from_onnx(model, progress=False)
    for r in got:
        f, c = r["image"], int(r["class"])
        np.testing.assert_allclose(float(r["score"]), p[f][c], rtol=1e-5)
        np.testing.assert_allclose(float(r["probability"]), p[f][c], rtol=1e-5)  # the output is the probability
        assert r["task"] == "multilabel" and f"class {c}" in r["target"]
        x = inputs(images / f)
        heat = ex.explain(x, r["method"], target=c).heatmap
        for mode in ("deletion", "insertion"):
            curve = metrics.perturbation_curve(ex, x, heat, mode, targets=[c], steps=4, score="raw", progress=False)
            np.testing.assert_allclose(float(r[f"{mode}_auc"]), curve.auc[0], rtol=1e-4, atol=1e-6)
        assert r["drop_pct"] != ""  # probabilities: average drop is defined
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "multilabel" and len(res["images"]) == len(want)
    assert res["no_class"] == sorted(f for f, v in p.items() if not (v >= threshold).any())
    assert res["summary"]["gradcam"]["images"] == len(want)  # rows, one per (image, class)
    html = (out / "report.html").read_text()
    assert "task multilabel" in html
    for f, c in want:  # one card per (image, class), its overlays alt-named after the class
        assert re.search(rf'alt="overlays/{f[0]}-[0-9a-f]+__gradcam__c{c}\.png"', html)
    # rerun: every image reused, the same rows
    res2 = audit.run(model, images, out, ["gradcam", "scorecam"], task="multilabel", threshold=threshold, steps=4,
                     progress=False)
    assert res2["run"]["reused"] and not res2["run"]["computed"]
    assert [(r["file"], r["class"]) for r in res2["images"]] == [(r["file"], r["class"]) for r in res["images"]]
    gone = res["images"][0]  # a row's overlay deleted: its image is computed again
    (out / gone["methods"]["scorecam"]["overlay"]).unlink()
    res3 = audit.run(model, images, out, ["gradcam", "scorecam"], task="multilabel", threshold=threshold, steps=4,
                     progress=False)
    assert res3["run"]["computed"] == [gone["file"]] and (out / gone["methods"]["scorecam"]["overlay"]).is_file()


def test_present_classes_from_ground_truth(model, images, tmp_path):
    present = {"a.png": [1, 3], "b.png": [], "c.png": [0]}
    (tmp_path / "present.json").write_text(json.dumps(present))
    out = tmp_path / "o"
    rc = main(["-q", "audit", str(model), str(images), "--out", str(out), "--task", "multilabel", "--present",
               str(tmp_path / "present.json"), "--methods", "eigencam", "--steps", "2", "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert [(r["file"], r["class"]) for r in res["images"]] == [("a.png", 1), ("a.png", 3), ("c.png", 0)]
    assert res["no_class"] == ["b.png"]
    for r in res["images"]:
        np.testing.assert_allclose(r["score"], probs(model, images / r["file"])[r["class"]], rtol=1e-5)
        assert "given" in r["target"] and r["methods"]["eigencam"]["overlay"].endswith(f"__c{r['class']}.png")
        assert (out / r["methods"]["eigencam"]["overlay"]).is_file()


def test_multilabel_audit_refusals(model, images, tmp_path, capsys):
    with pytest.raises(OptionError, match=r"\(0, 1\)"):
        audit.run(model, images, tmp_path / "o", "eigencam", task="multilabel", threshold=1.5)
    with pytest.raises(OptionError, match="no class list for 1 image"):
        audit.run(model, images, tmp_path / "o", "eigencam", task="multilabel", present={"a.png": [1], "b.png": []})
    with pytest.raises(OptionError, match="--task multilabel"):
        audit.run(model, images, tmp_path / "o", "eigencam", present={"a.png": [1]})
    with pytest.raises(OptionError, match="drop --target"):
        audit.run(model, images, tmp_path / "o", "eigencam", task="multilabel", target=1)
    (tmp_path / "bad.json").write_text(json.dumps({"a.png": [1.5]}))
    rc = main(["audit", str(model), str(images), "--out", str(tmp_path / "o"), "--task", "multilabel", "--present",
               str(tmp_path / "bad.json")])
    assert rc == 2 and "class index" in capsys.readouterr().err


def test_parquet_holds_one_row_per_image_class_and_method(model, images, tmp_path):
    import pyarrow.parquet as pq

    present = {"a.png": [1, 3], "b.png": [], "c.png": [0]}
    res = audit.run(model, images, tmp_path / "o", ["eigencam", "activation_map"], task="multilabel", present=present,
                    steps=2, format="parquet", progress=False)
    table = pq.read_table(tmp_path / "o" / "metrics.parquet").to_pydict()
    got = sorted(zip(table["image"], table["class"], table["method"]))
    assert got == sorted((f, c, m) for f, cs in present.items() for c in cs for m in ("eigencam", "activation_map"))
    assert res["no_class"] == ["b.png"] and res["images"] == []
