"""Detectors against their ground-truth boxes (``audit --task detect --ground-truth LABELS``): the
matching rule (same class, highest IoU, at least ``--iou``; unmatched boxes reported with the reason)
and the per-box score (energy-based pointing game of the matched detection's own map inside the box)
checked against references written here. The end-to-end audit runs ``drise`` on a random-weight
YOLOv8n exported at 96 px (instead of 640: a size reduction to keep the test fast) with YOLO labels
made from the model's own detections, so the boxes are ones the model can match."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from agnostic_cam import Explainer, audit
from agnostic_cam.audit import box_truth
from agnostic_cam.audit.detections import top_detections
from agnostic_cam.audit.ground_truth import GroundTruth
from agnostic_cam.errors import OptionError
from agnostic_cam.targets import DetectionBoxes


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_match(gt, dets, classes, thr):
    """The rule, loop by loop: index of the same-class detection of highest IoU if that IoU >= thr, else None."""
    out = []
    for c, *box in gt:
        best, arg = -1.0, None
        for d, k in zip(range(len(dets)), classes):
            if k == c and iou(box, dets[d]) > best:
                best, arg = iou(box, dets[d]), d
        out.append(arg if arg is not None and best >= thr else None)
    return out


def ebpg(heat, box):
    """Share of the map's sum on pixels whose centre (c + 0.5, r + 0.5) lies in the box."""
    r, c = np.mgrid[0:heat.shape[0], 0:heat.shape[1]] + 0.5
    inside = (c >= box[0]) & (c < box[2]) & (r >= box[1]) & (r < box[3])
    return float(heat[inside].sum() / heat.sum())


def test_matching_rule_against_a_loop():
    rng = np.random.default_rng(0)
    dets = np.sort(rng.uniform(0, 60, (30, 4)).reshape(30, 2, 2), axis=1).reshape(30, 4)[:, [0, 2, 1, 3]]
    dets[:, 2:] += 5
    classes = rng.integers(0, 3, 30)
    gt = [(int(rng.integers(0, 4)), *(dets[k] + rng.normal(0, 4, 4))) for k in rng.integers(0, 30, 25)]
    gt = [(c, x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)) for c, x0, y0, x1, y1 in gt]
    got = box_truth.match(gt, dets, classes, np.zeros(30), 0.5)
    want = reference_match(gt, dets, classes, 0.5)
    assert [e["detection"] for e in got] == want
    assert any(w is None for w in want) and any(w is not None for w in want)  # both cases occur
    for e, (c, *box) in zip(got, gt):
        if e["detection"] is None:
            assert e["why"] and (e["iou"] is None or e["iou"] < 0.5)
        else:
            assert e["iou"] == pytest.approx(iou(box, dets[e["detection"]]), abs=1e-7)
    # a VOC class name is looked up in the labels; one that is not there is unmatched with the reason
    named = box_truth.match([("dog", *dets[0])], dets, classes, np.zeros(30), 0.5, labels=["cat", "dog", "car"])
    assert named[0]["class_index"] == 1
    lost = box_truth.match([("zebra", *dets[0])], dets, classes, np.zeros(30), 0.5, labels=["cat"])
    assert lost[0]["detection"] is None and "--labels" in lost[0]["why"]


def test_each_matched_box_is_explained_alone_and_scored_inside_its_box(torch):
    """score_boxes on a tiny YOLO-style head (Grad-CAM, several boxes per image): each box's map is
    the explanation of that detection alone, its score the energy inside the ground-truth box."""
    from test_audit_tasks import tiny_yolo_class

    torch.manual_seed(0)

    Yolo = tiny_yolo_class()

    ex = Explainer.from_torch(Yolo().eval(), "c2", progress=False)
    x = np.random.default_rng(3).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    out = ex.predict(x)
    matches = []
    for j in range(2):
        b, lab, sc = top_detections(out[j:j + 1], "yolo", 3)[0]
        gt = [(int(lab[k]), *(np.clip(b[k] + [1, -1, 1, 1], 0, 32))) for k in range(len(b))] + [(2, 0, 0, 3, 3)]
        es = box_truth.match(gt, b, lab, sc, 0.3)
        for e in es:
            if e["detection"] is not None:
                e.update(det_box=b[e["detection"]].tolist(), det_class=int(lab[e["detection"]]))
        matches.append(es)
    assert sum(e["detection"] is not None for e in matches[0]) >= 2  # several boxes on one image
    scores, heat, rows = box_truth.score_boxes(ex, x, matches, "gradcam", "yolo", 0.3, (32, 32))
    for k, (j, i) in enumerate(rows):
        e = matches[j][i]
        alone = ex.explain(x[j:j + 1], "gradcam", target=DetectionBoxes([e["det_box"]], [e["det_class"]], iou=0.3,
                                                                          format="yolo")).heatmap[0]
        np.testing.assert_allclose(heat[k], alone, atol=1e-5)
        assert scores[j][i] == pytest.approx(ebpg(alone.astype(np.float64), e["gt"]), abs=1e-5)
    assert all(scores[j][i] is None for j, es in enumerate(matches) for i, e in enumerate(es) if e["detection"] is None)


@pytest.fixture
def yolo_set(tmp_path):
    """A random YOLOv8n at 96 px, two 96x96 images; image a's YOLO labels: its detections of classes
    4 and 15 clipped to the image, a 10 px box of class 4 in a corner, a class with no detection; image
    b's: only the class with no detection."""
    import onnxruntime as ort

    from yolo_models import yolov8n_onnx

    path = yolov8n_onnx(tmp_path / "yolov8n.onnx", size=96)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    imgs, labels = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(1)
    info = {}
    for name in ("a", "b"):
        img = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        Image.fromarray(img).save(imgs / f"{name}.png")
        x = (img.astype(np.float32) / 255).transpose(2, 0, 1)[None]
        b, lab, sc = top_detections(sess.run(None, {"images": x})[0], "yolo", box_truth.MAX_DETECTIONS)[0]
        missing = next(k for k in range(80) if k not in set(lab.tolist()))
        gt = [(missing, 10.0, 10.0, 50.0, 50.0)]
        if name == "a":
            first = {}
            for k in range(len(b)):
                first.setdefault(int(lab[k]), k)
            c = next(c for c in lab.tolist() if iou(np.clip(b[first[c]], 0, 96), b[first[c]]) >= 0.4)
            gt = [(c, *np.clip(b[first[c]], 0, 96)), (c, 0.0, 0.0, 10.0, 10.0)] + gt
        (labels / f"{name}.txt").write_text("".join(
            f"{c} {(x0 + x1) / 192} {(y0 + y1) / 192} {(x1 - x0) / 96} {(y1 - y0) / 96}\n" for c, x0, y0, x1, y1 in gt))
        info[name] = (x, b, lab, sc, gt)
    return path, imgs, labels, info


def test_detector_audit_against_yolo_labels_writes_per_box_scores(yolo_set, tmp_path):
    path, imgs, labels, info = yolo_set
    out = tmp_path / "o"
    res = audit.run(path, imgs, out, "drise", task="detect", ground_truth=labels, iou=0.4, steps=2, progress=False)
    failed = {f["file"]: f["error"] for f in res["run"]["failed"]}
    assert "b.png" in failed and "none of the 1 ground-truth boxes" in failed["b.png"] and "no detection of class" in failed["b.png"]
    rec = json.loads((out / "results.json").read_text())["images"][0]
    assert rec["file"] == "a.png"
    x, b, lab, sc, gt = info["a"]
    want = reference_match(gt, b, lab, 0.4)
    assert want[0] is not None and want[1] is None and want[2] is None  # the set is as designed
    assert [e["matched"] for e in rec["boxes"]] == [w is not None for w in want]
    ex = Explainer.from_onnx(str(path), progress=False)
    for e, w, (c, *box) in zip(rec["boxes"], want, gt):
        assert e["class"] == c
        np.testing.assert_allclose(e["box"], box, atol=1e-3)
        if w is None:
            assert e["detection"] is None and e["energy_pointing"]["drise"] is None and e["why"]
            continue
        np.testing.assert_allclose(e["detection"], b[w], atol=1e-3)
        assert e["iou"] == pytest.approx(iou(box, b[w]), abs=1e-6)
        assert e["detection_score"] == pytest.approx(float(sc[w]), rel=1e-6)
        heat = ex.explain(x, "drise", target=DetectionBoxes(b[w], [int(lab[w])], iou=0.4, format="yolo")).heatmap[0]
        assert e["energy_pointing"]["drise"] == pytest.approx(ebpg(heat.astype(np.float64), box), abs=1e-6)
    rows = list(csv.DictReader((out / "boxes.csv").open()))
    assert [(r["image"], r["box"], r["matched"], r["method"]) for r in rows] == \
        [("a.png", str(i), str(int(w is not None)), "drise") for i, w in enumerate(want)]
    assert float(rows[0]["energy_pointing"]) == pytest.approx(rec["boxes"][0]["energy_pointing"]["drise"], abs=1e-6)
    assert rows[1]["energy_pointing"] == "" and "IoU" in rows[1]["why"]
    assert "unmatched" in (out / "report.html").read_text()


def test_detector_ground_truth_needs_boxes_not_masks(tmp_path):
    masks = tmp_path / "m"
    masks.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / "a.png")
    assert GroundTruth(masks).boxes("a.png", (8, 8))[0] is None
    from agnostic_cam.audit.tasks import make_task

    with pytest.raises(OptionError, match="drop --boxes"):
        make_task("detect", top_boxes=1, ground_truth=masks)


def test_the_same_boxes_from_every_box_format(tmp_path):
    """COCO (bbox, polygon, RLE), YOLO and Pascal VOC labels of the same objects give the same boxes
    (x0, y0, x1, y1), at the image's size and scaled with it; the class is each format's own."""
    from test_ground_truth import OBJECTS, write_sets

    sets = write_sets(tmp_path)
    want_class = {"coco_bbox": 1, "coco_polygon": 1, "coco_rle": 1, "yolo": 3, "voc": "x"}
    for kind, cls in want_class.items():
        gt = GroundTruth(sets[kind])
        for name, objs in OBJECTS.items():
            for size in ((64, 64), (32, 48)):
                got, why = gt.boxes(f"{name}.png", size)
                assert why is None, (kind, why)
                sy, sx = size[0] / 64, size[1] / 64
                want = [(cls, x0 * sx, y0 * sy, x1 * sx, y1 * sy) for y0, x0, y1, x1 in objs]
                assert [g[0] for g in got] == [w[0] for w in want], kind
                np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], atol=1e-9, err_msg=kind)
        assert gt.boxes("nothing.png", (64, 64)) == (None, f"no label for 'nothing' in {sets[kind].name} ({gt.format})")


def test_cli_detector_audit_with_ground_truth(torch, tmp_path):
    """The command line on a tiny YOLO-style head (32 px), labels from its own best anchor plus a box
    of a class it never predicts there: rc 0, boxes.csv with a row per box and method."""
    from agnostic_cam.cli import main
    from test_audit_tasks import export, tiny_yolo_class

    torch.manual_seed(0)

    Yolo = tiny_yolo_class()

    model = Yolo().eval()
    path = export(torch, model, tmp_path / "yolo.onnx", ["output0"])
    imgs, labels = tmp_path / "imgs", tmp_path / "labels"
    imgs.mkdir()
    labels.mkdir()
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(img).save(imgs / "a.png")
    out = model(torch.from_numpy(img.transpose(2, 0, 1)[None] / 255.0).float()).detach().numpy()
    b, lab, _ = top_detections(out, "yolo", 100)[0]
    x0, y0, x1, y1 = b[0]
    other = next((k for k in range(3) if k not in set(lab.tolist())), None)  # a class with no detection
    lines = f"{lab[0]} {(x0 + x1) / 64} {(y0 + y1) / 64} {(x1 - x0) / 32} {(y1 - y0) / 32}\n"
    lines += f"{lab[0]} 0.05 0.05 0.1 0.1\n"  # same class, far too small: the IoU rule leaves it unmatched
    if other is not None:
        lines += f"{other} 0.5 0.5 0.2 0.2\n"
    (labels / "a.txt").write_text(lines)
    o = tmp_path / "o"
    rc = main(["-q", "audit", str(path), str(imgs), "--out", str(o), "--task", "detect", "--ground-truth", str(labels),
               "--methods", "drise,gradcam", "--steps", "2", "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader((o / "boxes.csv").open()))
    n = len(lines.splitlines())
    assert len(rows) == 2 * n and {r["method"] for r in rows} == {"drise", "gradcam"}
    assert [r["matched"] for r in rows[::2]] == ["1"] + ["0"] * (n - 1)
    assert all(0 <= float(r["energy_pointing"]) <= 1 for r in rows if r["matched"] == "1")
    report = (o / "report.html").read_text()
    assert "energy in box" in report and "unmatched" in report
    with pytest.raises(OptionError, match="mask images"):
        masks = tmp_path / "m"
        masks.mkdir()
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / "a.png")
        audit.run(path, imgs, tmp_path / "o2", "drise", task="detect", ground_truth=masks, progress=False)


def test_boxes_are_drawn_ground_truth_white_detection_amber():
    rgb = np.zeros((40, 80, 3), np.uint8)  # the picture at twice the model's 20x40 input
    e = {"gt": [2.0, 2.0, 12.0, 10.0], "det_box": [20.0, 5.0, 30.0, 15.0]}
    out = box_truth.draw_boxes(rgb, [e, {"gt": [0.0, 0.0, 1.0, 1.0], "det_box": None}], (20, 40))
    assert rgb.sum() == 0  # the input is left as it was
    assert (out[4, 4:25] == box_truth.GT_COLOUR).all() and (out[4:21, 4] == box_truth.GT_COLOUR).all()
    assert (out[10, 40:61] == box_truth.DETECTION_COLOUR).all() and (out[10:31, 60] == box_truth.DETECTION_COLOUR).all()
    assert (out[15, 15] == 0).all()  # inside a box: untouched
