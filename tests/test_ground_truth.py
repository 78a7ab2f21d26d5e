"""Audits against ground truth: one synthetic set with known objects written in each of the four
formats (COCO boxes, polygons and RLE; YOLO; Pascal VOC; mask images) gives the same localisation
numbers, equal to the metric functions on the known masks; missing and broken labels are reported
per image, never guessed."""
import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

from agnostic_cam import Explainer, audit
from agnostic_cam.audit.ground_truth import GroundTruth, rle_counts
from agnostic_cam.errors import OptionError
from agnostic_cam.evaluation import localisation as loc
from onnx_helpers import export_torch

S = 64
# (y0, x0, y1, x1) end-exclusive object rectangles of three images; the fourth has no label
OBJECTS = {"a": [(8, 10, 30, 40)], "b": [(20, 5, 60, 25), (2, 40, 12, 60)], "c": [(33, 33, 64, 64)]}
COLUMNS = ("pointing_hit", "energy_pointing", "relevance_mass", "relevance_rank", "roc_auc")


def truth(name):
    m = np.zeros((S, S), bool)
    for y0, x0, y1, x1 in OBJECTS[name]:
        m[y0:y1, x0:x1] = True
    return m


def coco_string(counts):
    """COCO's compressed RLE string (the inverse of its decoder, written from the format's description)."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = not ((c & 0x10 == 0 and x == 0) or (c & 0x10 and x == -1))
            out.append(chr(c + (0x20 if more else 0) + 48))
    return "".join(out)


def runs(mask):
    flat = mask.T.ravel()  # column-major
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    return counts if not flat[0] else [0] + counts


def write_sets(root):
    sets = {}
    images = [{"id": i, "file_name": f"sub/{n}.png", "width": S, "height": S} for i, n in enumerate(OBJECTS)]
    for kind in ("bbox", "polygon", "rle"):
        anns = []
        for i, (n, objs) in enumerate(OBJECTS.items()):
            for y0, x0, y1, x1 in objs:
                a = {"id": len(anns), "image_id": i, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0]}
                if kind == "polygon":
                    a["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                if kind == "rle":
                    one = np.zeros((S, S), bool)
                    one[y0:y1, x0:x1] = True
                    c = runs(one)
                    a["segmentation"] = {"size": [S, S], "counts": coco_string(c) if i % 2 else c}
                anns.append(a)
        p = root / f"coco_{kind}.json"
        p.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
        sets[f"coco_{kind}"] = p
    for kind in ("yolo", "voc", "masks", "palette"):
        (root / kind).mkdir()
        sets[kind] = root / kind
    for n, objs in OBJECTS.items():
        (root / "yolo" / f"{n}.txt").write_text("".join(
            f"3 {(x0 + x1) / 2 / S} {(y0 + y1) / 2 / S} {(x1 - x0) / S} {(y1 - y0) / S}\n" for y0, x0, y1, x1 in objs))
        boxes = "".join(f"<object><name>x</name><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax>"
                        f"<ymax>{y1}</ymax></bndbox></object>" for y0, x0, y1, x1 in objs)
        (root / "voc" / f"{n}.xml").write_text(f"<annotation><filename>{n}.png</filename><size><width>{S}</width>"
                                               f"<height>{S}</height><depth>3</depth></size>{boxes}</annotation>")
        Image.fromarray((truth(n) * 255).astype(np.uint8)).save(root / "masks" / f"{n}.png")
        pal = np.where(truth(n), 7, 0).astype(np.uint8)
        pal[0, :] = 255  # a VOC 'void' border is not the object
        if n == "b":
            pal[truth(n) & (np.arange(S)[:, None] < 15)] = 12  # the second object is another class
        im = Image.fromarray(pal, mode="P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        im.save(root / "palette" / f"{n}.png")
    return sets


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("model") / "cnn.onnx"
    onnx.save(export_torch(net, size=S), path)
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return Explainer.from_onnx(model_path, progress=False)


def test_rle_string_round_trip():
    c = [5, 3, 0, 120, 7, 1, 64, 2000, 3]
    assert rle_counts(coco_string(c)) == c


def test_same_localisation_numbers_in_every_format(tmp_path, model):
    imgs = tmp_path / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for n in [*OBJECTS, "d"]:
        Image.fromarray(rng.integers(0, 255, (S, S, 3), dtype=np.uint8)).save(imgs / f"{n}.png")
    sets = write_sets(tmp_path)
    for kind, path in sets.items():
        gt = GroundTruth(path)
        for n in OBJECTS:
            np.testing.assert_array_equal(gt.lookup(f"{n}.png", (S, S))[0], truth(n), err_msg=f"{kind} {n}")
    heat = model.explain(np.stack([np.asarray(Image.open(imgs / f"{n}.png"), np.float32).transpose(2, 0, 1) / 255
                                   for n in OBJECTS]), "gradcam").heatmap
    masks = np.stack([truth(n) for n in OBJECTS])
    expect = {"energy_pointing": loc.energy_based_pointing_game(heat, masks),
              "relevance_rank": loc.relevance_rank_accuracy(heat, masks), "roc_auc": loc.auc(heat, masks)}
    seen = {}
    for kind, path in sets.items():
        res = audit.run(model, imgs, tmp_path / f"out_{kind}", "gradcam", ground_truth=path, metrics="localisation",
                        progress=False)
        recs = {r["file"]: r for r in res["images"]}
        assert "no label for 'd'" in recs["d.png"]["ground_truth"]
        assert recs["d.png"]["methods"]["gradcam"]["energy_pointing"] is None
        assert recs["a.png"]["methods"]["gradcam"]["deletion_auc"] is None  # faithfulness not asked for
        seen[kind] = np.array([[recs[f"{n}.png"]["methods"]["gradcam"][c] for c in COLUMNS] for n in OBJECTS], float)
        assert "ground truth: no label" in (tmp_path / f"out_{kind}" / "report.html").read_text()
    first = next(iter(seen.values()))
    assert np.isfinite(first).all() and len(np.unique(first[:, 1])) == 3  # real, distinct maps
    for kind, v in seen.items():
        np.testing.assert_array_equal(v, first, err_msg=kind)
    for j, c in enumerate(COLUMNS):
        if c in expect:
            np.testing.assert_allclose(first[:, j], expect[c], rtol=1e-5, atol=1e-6, err_msg=c)


def test_broken_label_fails_its_image_only(tmp_path, model):
    imgs = tmp_path / "images"
    imgs.mkdir()
    for n in ("a", "b"):
        Image.fromarray(np.full((S, S, 3), 90 if n == "a" else 160, np.uint8)).save(imgs / f"{n}.png")
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text("<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
                               "</bndbox></object></annotation>")
    (voc / "b.xml").write_text("<annotation><object><bndbox><xmin>oops")
    res = audit.run(model, imgs, tmp_path / "out", "gradcam", ground_truth=voc, progress=False)
    recs = {r["file"]: r for r in res["images"]}
    assert recs["a.png"]["ground_truth"] == "ok" and recs["a.png"]["methods"]["gradcam"]["deletion_auc"] is not None
    assert recs["b.png"]["ground_truth"].startswith("unreadable label for 'b' (voc)")
    assert recs["b.png"]["methods"]["gradcam"]["relevance_mass"] is None
    with pytest.raises(OptionError, match="need object boxes or masks"):
        audit.run(model, imgs, tmp_path / "out2", "gradcam", metrics="localisation", progress=False)
    with pytest.raises(OptionError, match="neither a COCO"):
        GroundTruth(tmp_path / "nothing.txt")


def test_methods_ranked_per_metric_with_their_agreement(tmp_path, model):
    from scipy.stats import kendalltau

    from agnostic_cam.audit.ranking import kendall_tau, rank_methods

    rng = np.random.default_rng(1)
    for _ in range(100):  # tau-b against SciPy, ties included
        a, b = rng.integers(0, 3, 5), rng.integers(0, 3, 5)
        ref = kendalltau(a, b).statistic
        t = kendall_tau(a, b)
        assert (t is None and np.isnan(ref)) or abs(t - ref) < 1e-12
    agree = rank_methods({"p": {"deletion_auc": 0.1, "insertion_auc": 0.9}, "q": {"deletion_auc": 0.3, "insertion_auc": 0.2}})
    assert agree["best"] == "p" and agree["kendall_tau"] == {"deletion_auc ~ insertion_auc": 1.0}
    split = rank_methods({"p": {"deletion_auc": 0.1, "insertion_auc": 0.1}, "q": {"deletion_auc": 0.3, "insertion_auc": 0.2}})
    assert split["best"] is None and "disagree" in split["verdict"] and split["ranks"]["insertion_auc"]["q"] == 1

    imgs = tmp_path / "images"
    imgs.mkdir()
    for n in OBJECTS:
        Image.fromarray(rng.integers(0, 255, (S, S, 3), dtype=np.uint8)).save(imgs / f"{n}.png")
    sets = write_sets(tmp_path)
    res = audit.run(model, imgs, tmp_path / "out", "gradcam,gradcam++", ground_truth=sets["voc"], steps=4,
                    metrics="faithfulness,localisation,complexity", progress=False)
    r = res["ranking"]
    assert set(r["ranks"]["deletion_auc"]) == {"gradcam", "gradcam++"} and "sparseness" in res["summary"]["gradcam"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["ranking"]
    assert saved["verdict"] == r["verdict"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Method ranking" in html and ("Recommended: " in html) == (r["best"] is not None)


def test_cli_ground_truth_and_metric_groups(tmp_path, model_path, capsys):
    from agnostic_cam.cli import main

    imgs = tmp_path / "images"
    imgs.mkdir()
    for n in OBJECTS:
        Image.fromarray(np.full((S, S, 3), 120, np.uint8)).save(imgs / f"{n}.png")
    sets = write_sets(tmp_path)
    args = ["audit", str(model_path), str(imgs), "--out", str(tmp_path / "o"), "--methods", "gradcam,eigencam",
            "--ground-truth", str(sets["yolo"]), "--steps", "3"]
    assert main(args) == 0
    # faithfulness + localisation: the prediction, the blurred image, and per method image x map and 2 x 2 steps
    assert "metrics: faithfulness, localisation; 12 forward passes per image" in capsys.readouterr().err
    assert main([*args[:-4], "--metrics", "localisation", "--out", str(tmp_path / "o2")]) == 2
    assert "add --ground-truth PATH" in capsys.readouterr().err
    assert main([*args, "--metrics", "complexity", "--out", str(tmp_path / "o3")]) == 0
    assert "metrics: complexity; 1 forward passes per image" in capsys.readouterr().err

