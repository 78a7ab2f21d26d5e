"""``agnostic-cam audit --task segment|detect`` end to end on tiny ONNX models built here: a 32 px
segmenter, a YOLO-style detector (N, 4+K, A) and a torchvision-style detector (boxes / labels /
scores outputs, batch 1), 2-3 images each. The task target's score in metrics.csv is checked
against a hand computation on ONNX Runtime's raw output; wrong combinations give typed errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from agnostic_cam import audit
from agnostic_cam.cli import main
from agnostic_cam.errors import ModelError, OptionError
from test_task_targets import yolo_by_hand  # (N, 4+K, A) head scored box by box, loop by loop


def head(torch, x, c1, c2, hd):
    """conv(s2)-ReLU-conv(s2)-ReLU-1x1 head -> (N, 4+K, A): cx, cy = (grid + sigmoid) * 4, w, h = 8 exp(tanh t)."""
    p = hd(torch.relu(c2(torch.relu(c1(x)))))
    n, k, h, w = p.shape
    gy, gx = torch.meshgrid(torch.arange(h, dtype=p.dtype), torch.arange(w, dtype=p.dtype), indexing="ij")
    cx, cy = (gx + torch.sigmoid(p[:, 0])) * 4, (gy + torch.sigmoid(p[:, 1])) * 4
    wh = 8 * torch.exp(torch.tanh(p[:, 2:4]))
    return torch.cat([cx[:, None], cy[:, None], wh, torch.sigmoid(p[:, 4:])], 1).reshape(n, k, h * w)


def tiny_yolo_class():
    """A two-convolution stand-in for a YOLO detector (3 classes): its output is :func:`head`'s."""
    import torch
    from torch import nn

    class Yolo(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.hd = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1), nn.Conv2d(16, 7, 1)

        def forward(self, x):
            return head(torch, x, self.c1, self.c2, self.hd)

    return Yolo


def export(torch, model, path, outputs, dynamic=True):
    x = torch.zeros(1, 3, 32, 32)
    axes = {n: {0: "n"} for n in ["images", *outputs]} if dynamic else None
    torch.onnx.export(model.eval(), x, str(path), dynamo=False, input_names=["images"], output_names=outputs,
                      dynamic_axes=axes)
    return path


@pytest.fixture
def models(torch, tmp_path):
    from torch import nn

    torch.manual_seed(0)

    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.cls = nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 3, 1)

        def forward(self, x):
            return self.cls(torch.relu(self.c2(torch.relu(self.c1(x)))))

    Yolo = tiny_yolo_class()

    class TorchvisionStyle(Yolo):
        def forward(self, x):  # one image: its 5 best anchors as boxes (5, 4), labels (5,), scores (5,)
            o = head(torch, x, self.c1, self.c2, self.hd)[0].T
            score, label = o[:, 4:].max(1)
            s, idx = score.topk(5)
            b = o[idx, :4]
            return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1), label[idx], s

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x)).mean((2, 3)))

    return {"seg": export(torch, Seg(), tmp_path / "seg.onnx", ["out"]),
            "yolo": export(torch, Yolo(), tmp_path / "yolo.onnx", ["output0"]),
            "tv": export(torch, TorchvisionStyle(), tmp_path / "tv.onnx", ["boxes", "labels", "scores"], False),
            "cls": export(torch, Classifier(), tmp_path / "cls.onnx", ["logits"])}


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{name}.png")
    return d


def raw(path, img):
    """ONNX Runtime outputs for one image file, preprocessed as the audit's default (RGB, 0-1, NCHW)."""
    import onnxruntime as ort

    x = (np.asarray(Image.open(img).convert("RGB"), np.float32) / 255).transpose(2, 0, 1)[None]
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})


def rows(out):
    return list(csv.DictReader((out / "metrics.csv").open()))


def test_segment_audit_scores_the_class_over_each_mask(models, images, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    region = {"a": np.zeros((32, 32), np.uint8), "b": np.zeros((32, 32), np.uint8)}
    region["a"][4:20, 8:30] = 255
    region["b"][16:, :] = 1
    for k, m in region.items():
        Image.fromarray(m).save(masks / f"{k}.png")
    out = tmp_path / "o"
    rc = main(["-q", "audit", str(models["seg"]), str(images), "--out", str(out), "--task", "segment", "--class", "2",
               "--masks", str(masks), "--methods", "rise,occlusion,eigencam", "--steps", "4", "--no-progress"])
    assert rc == 0
    got = rows(out)
    assert len(got) == 6 and {r["task"] for r in got} == {"segment"}
    for r in got:
        stem = r["image"][0]
        want = (raw(models["seg"], images / r["image"])[0][0, 2] * (region[stem] > 0)).sum()
        np.testing.assert_allclose(float(r["score"]), want, rtol=1e-4)
        assert r["class"] == "2" and "mask" in r["target"] and r["pointing_hit"] in ("0", "1")
        assert r["energy_pointing"] == "" or 0 <= float(r["energy_pointing"]) <= 1  # share of the map in the mask
        assert r["deletion_auc"] and r["insertion_auc"] and r["drop_pct"] == ""
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "segment" and res["settings"]["task"]["masks_hash"]
    assert "task segment" in (out / "report.html").read_text()
    # no masks: the whole image; the score is the class's sum over the whole map
    out2 = tmp_path / "o2"
    res = audit.run(models["seg"], images, out2, ["eigencam"], task="segment", category=0, steps=2, progress=False)
    for rec in res["images"]:
        np.testing.assert_allclose(rec["score"], raw(models["seg"], images / rec["file"])[0][0, 0].sum(), rtol=1e-4)
        assert rec["target"] == "class 0 over the whole image" and rec["methods"]["eigencam"]["pointing_hit"] is None


def test_detect_audit_on_a_yolo_head_with_boxes_and_top_boxes(models, images, tmp_path):
    boxes = {"a.png": [{"box": [8, 8, 20, 20], "label": 1}], "b.png": [{"box": [4, 10, 16, 26], "label": 2},
                                                                        {"box": [16, 16, 30, 30], "label": 0}]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "o"
    rc = main(["-q", "audit", str(models["yolo"]), str(images), "--out", str(out), "--task", "detect", "--boxes",
               str(tmp_path / "boxes.json"), "--iou", "0.2", "--methods", "eigencam,rise,gradcam", "--steps", "4",
               "--no-progress"])
    assert rc == 0
    got = rows(out)
    assert len(got) == 6 and {r["method"] for r in got} == {"eigencam", "rise", "gradcam"}
    for r in got:
        bs = boxes[r["image"]]
        want = yolo_by_hand(raw(models["yolo"], images / r["image"])[0], [b["box"] for b in bs],
                            [b["label"] for b in bs], 0.2)[0]
        assert want > 0
        np.testing.assert_allclose(float(r["score"]), want, rtol=1e-5)
        assert r["task"] == "detect" and r["target"].count("box [") == len(bs) and r["pointing_hit"] in ("0", "1")
        assert r["energy_pointing"] == "" or 0 <= float(r["energy_pointing"]) <= 1  # share of the map in the boxes
    # --top-boxes 1: the anchor of highest class score, as its own box
    res = audit.run(models["yolo"], images, tmp_path / "o2", "occlusion", task="detect", top_boxes=1, steps=2,
                    progress=False)
    for rec in res["images"]:
        out = raw(models["yolo"], images / rec["file"])[0]
        a = out[0][:, out[0][4:].max(0).argmax()]
        box, label = [a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2], int(a[4:].argmax())
        np.testing.assert_allclose(rec["score"], yolo_by_hand(out, [box], [label], 0.5)[0], rtol=1e-5)
        assert rec["class"] == label and rec["methods"]["occlusion"]["pointing_hit"] is None


def test_detect_audit_on_torchvision_style_outputs(models, images, tmp_path):
    """boxes/labels/scores outputs are packed into one (1, 100, 6) output; the model's own best box
    matches itself: score = IoU 1 + its score."""
    res = audit.run(models["tv"], images, tmp_path / "o", "rise,eigencam", task="detect", top_boxes=1, steps=2,
                    progress=False)
    assert res["run"]["explained"] == 2 and res["settings"]["output"] == "detections"
    for rec in res["images"]:
        b, lab, s = raw(models["tv"], images / rec["file"])
        np.testing.assert_allclose(rec["score"], 1.0 + s[0], rtol=1e-5)
        assert rec["class"] == int(lab[0])


def test_wrong_task_combinations_are_typed_errors(models, images, tmp_path, capsys):
    with pytest.raises(OptionError, match="--boxes .* or --top-boxes"):
        audit.run(models["yolo"], images, tmp_path / "o", "rise", task="detect")
    with pytest.raises(OptionError, match="--class"):
        audit.run(models["seg"], images, tmp_path / "o", "rise", task="segment")
    with pytest.raises(ModelError, match="classifier"):
        audit.run(models["cls"], images, tmp_path / "o", "rise", task="segment", category=0)
    with pytest.raises(ModelError, match="YOLO-style"):
        audit.run(models["seg"], images, tmp_path / "o", "rise", task="detect", top_boxes=1)
    with pytest.raises(OptionError, match="--target"):
        audit.run(models["seg"], images, tmp_path / "o", "rise", task="segment", category=0, target=1)
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.ones((16, 16), np.uint8)).save(masks / "a.png")
    Image.fromarray(np.ones((32, 32), np.uint8)).save(masks / "b.png")
    with pytest.raises(OptionError, match="16x16 but image 'a.png' is 32x32"):
        audit.run(models["seg"], images, tmp_path / "o", "rise", task="segment", category=0, masks=masks)
    (masks / "b.png").unlink()
    rc = main(["audit", str(models["seg"]), str(images), "--out", str(tmp_path / "o"), "--task", "segment",
               "--class", "0", "--masks", str(masks)])
    assert rc == 2 and "no mask for 1 image" in capsys.readouterr().err
    rc = main(["audit", str(models["yolo"]), str(images), "--out", str(tmp_path / "o"), "--task", "detect"])
    assert rc == 2 and "--top-boxes" in capsys.readouterr().err
