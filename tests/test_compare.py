"""agnostic_cam.compare (issue 30): explanations of two or more models compared, the layer walk,
and the ``agnostic-cam compare`` command. Every number is checked against a reference computed
here independently (direct ``ex.explain`` / ``ex.predict``, SciPy, scikit-image, ONNX Runtime)."""
import csv
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (see tests/onnx_helpers.py)

import agnostic_cam
from agnostic_cam import Explainer
from agnostic_cam.compare import walk_layers
from agnostic_cam.compare.measures import check_top, map_measures, top_iou
from agnostic_cam.errors import InputError, MissingDependencyError, OptionError

ROOT = Path(__file__).resolve().parents[1]
EXACT = ["cam", "gradcam", "saliency"]  # CAM and single-gradient methods: <= 1e-6 of the reference


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def script():
    return _load(ROOT / "scripts" / "compare_frameworks.py", "compare_frameworks")


@pytest.fixture(scope="module")
def demo(script):
    from agnostic_cam.demo.data import make_shapes

    x, y, _ = make_shapes(3, seed=7)
    return script.build_explainers(), x, y


def _own(ex, x):
    return x if ex.adapter.layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def test_demo_three_frameworks_give_the_direct_numbers(demo):
    exs, x, y = demo
    res = agnostic_cam.compare([exs["torch"], exs["keras"], exs["onnx"]], x, EXACT, targets=y)
    assert res.names == ["torch", "keras", "onnx"] and res.pairs == ["torch vs keras", "torch vs onnx", "keras vs onnx"]
    direct = {m: {fw: ex.explain(_own(ex, x), m, target=y) for fw, ex in exs.items()} for m in EXACT}
    preds = {fw: ex.predict(_own(ex, x)).argmax(1) for fw, ex in exs.items()}
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    for m in EXACT:
        for a, b in (("torch", "keras"), ("torch", "onnx"), ("keras", "onnx")):
            ha, hb = direct[m][a].heatmap, direct[m][b].heatmap
            s = res.pair(m, a, b)
            assert abs(s["max_diff"] - float(np.abs(ha - hb).max())) <= 1e-6, (m, a, b)
            assert s["max_diff"] <= 1e-4 and s["top1_agree"] == float(np.mean(preds[a] == preds[b]))
            rows = [r for r in res.rows if r["method"] == m and (r["a"], r["b"]) == (a, b)]
            for r in rows:
                i = r["image"]
                assert abs(r["mean_diff"] - float(np.abs(ha[i] - hb[i]).mean())) <= 1e-6
                assert abs(r["score_diff"] - abs(float(direct[m][a].scores[i]) - float(direct[m][b].scores[i]))) <= 1e-6
                assert r["target_a"] == r["target_b"] == y[i]
            assert abs(s["spearman"] - np.mean([spearmanr(ha[i].ravel(), hb[i].ravel())[0] for i in range(3)])) < 1e-6
            assert abs(s["ssim"] - np.mean([structural_similarity(ha[i].astype(np.float64), hb[i].astype(np.float64),
                                                                  data_range=1.0) for i in range(3)])) < 1e-6
    two = {"torch": exs["torch"], "keras": exs["keras"]}
    nhwc = agnostic_cam.compare(two, x.transpose(0, 2, 3, 1), ["cam"], targets=y, layout="NHWC")
    assert [r["max_diff"] for r in nhwc.rows] == [r["max_diff"] for r in res.rows if r["method"] == "cam"
                                                  and (r["a"], r["b"]) == ("torch", "keras")]


def test_script_is_a_thin_example_with_the_same_numbers(script, demo):
    exs, x, y = demo
    out = script.compare(n_images=3, methods=["gradcam", "saliency"], explainers=exs)
    direct = {(m, fw): ex.explain(_own(ex, x), m, target=y).heatmap for m in ("gradcam", "saliency")
              for fw, ex in exs.items()}
    assert len((ROOT / "scripts" / "compare_frameworks.py").read_text().splitlines()) < 150
    for r in out["rows"]:
        for pair, v in r["diff"].items():
            a, b = pair.split("-")
            ref = np.abs(direct[r["method"], a] - direct[r["method"], b]).max()
            assert abs(v - ref) <= 1e-6 and v <= 1e-4, (r["method"], pair)
    assert out["rows"][1]["raw_rel"] is not None and out["rows"][0]["raw_rel"] is None


def test_measures_on_hand_built_maps():
    a = np.arange(16, dtype=np.float64).reshape(4, 4) / 15
    assert top_iou(a, a[::-1, ::-1], 0.5) == 0.0 and top_iou(a, a, 0.25) == 1.0 and top_iou(a, 1 - a, 1.0) == 1.0
    b = a.copy()
    b[0, 0], b[3, 3] = 1.0, 0.0  # the top-1 pixel moves: top 1/16 sets are disjoint
    assert top_iou(a, b, 1 / 16) == 0.0 and top_iou(a, b, 2 / 16) == pytest.approx(1 / 3)
    m = map_measures(np.kron(a, np.ones((2, 2))), np.kron(b, np.ones((2, 2))))  # 8x8: SSIM's 7x7 window fits
    assert m["max_diff"] == 1.0 and m["mean_diff"] == pytest.approx(2 / 16) and m["ssim"] < 1
    for bad in (0, 1.5, "x"):
        with pytest.raises(OptionError, match=r"\(0, 1\]"):
            check_top(bad)


def test_errors_name_the_fix(demo):
    exs, x, y = demo
    with pytest.raises(InputError, match="at least two"):
        agnostic_cam.compare([exs["torch"]], x)
    with pytest.raises(OptionError, match="top"):
        agnostic_cam.compare(exs, x, "gradcam", top=0)
    with pytest.raises(OptionError, match="no_such_method|cannot run"):
        agnostic_cam.compare(exs, x, "no_such_method")
    with pytest.raises(InputError, match="not an agnostic_cam Explainer"):
        agnostic_cam.compare({"a": exs["torch"], "b": object()}, x)


def _permute_conv2(kmodel, seed=0):
    conv = kmodel.get_layer("conv2")
    w, b = conv.get_weights()
    perm = np.random.default_rng(seed).permutation(w.shape[-1])
    conv.set_weights([w[..., perm], b[perm]])


def test_layer_walk_finds_the_broken_keras_port(demo):
    from agnostic_cam.demo import keras_model, torch_model

    exs, x, _ = demo
    twin = walk_layers({"torch": exs["torch"], "keras": exs["keras"]}, x)
    assert twin.first_split is None and twin.first_over is None and twin.matched_by == "order"
    assert [r["b"] for r in twin.rows] == [f"{k}{i}" for i in (1, 2, 3) for k in ("conv", "bn", "relu", "pool")][:11]
    broken = keras_model.keras_twin(torch_model.load_demo_net())
    _permute_conv2(broken)
    walk = walk_layers({"torch": exs["torch"], "keras": Explainer.from_keras(broken, "relu3")}, x)
    assert (walk.first_split["a"], walk.first_split["b"]) == ("features.conv2", "conv2")
    assert walk.first_over is walk.first_split
    before = [r for r in walk.rows[:walk.rows.index(walk.first_split)]]
    assert [r["b"] for r in before] == ["conv1", "bn1", "relu1", "pool1"] and max(r["act_rel"] for r in before) < 1e-5
    assert "first split: features.conv2 / conv2" in walk.table()
    mapped = walk_layers({"torch": exs["torch"], "keras": exs["keras"]}, x, mapping={"features.relu3": "relu3"})
    assert mapped.matched_by == "mapping" and [r["b"] for r in mapped.rows] == ["relu3"]
    with pytest.raises(InputError, match="no such spatial layer"):
        walk_layers({"torch": exs["torch"], "keras": exs["keras"]}, x, mapping={"features.relu9": "relu3"})


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    import torchvision
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    d = tmp_path_factory.mktemp("r18")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), str(d / "r18.onnx"), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        quantize_dynamic(str(d / "r18.onnx"), str(d / "r18_int8.onnx"), weight_type=QuantType.QUInt8)
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    return {"net": net, "dir": d, "x": x, "torch": Explainer.from_torch(net, "layer4", input_shape=(3, 64, 64)),
            "onnx": Explainer.from_onnx(d / "r18.onnx"), "int8": Explainer.from_onnx(d / "r18_int8.onnx")}


RESNET_METHODS = ["gradcam", "gradcam++", "eigencam", "saliency"]  # a CAM, a second-order CAM, a gradient-free one, pixels


def test_resnet18_agrees_with_its_onnx_export(resnet):
    res = agnostic_cam.compare({"torch": resnet["torch"], "onnx": resnet["onnx"]}, resnet["x"], RESNET_METHODS)
    ref = np.abs(resnet["torch"].explain(resnet["x"], "gradcam").heatmap
                 - resnet["onnx"].explain(resnet["x"], "gradcam").heatmap).max()
    assert abs(res.max_diff("gradcam") - ref) <= 1e-6
    worst = {m: res.max_diff(m) for m in RESNET_METHODS}
    assert max(worst.values()) <= 1e-4, worst
    walk = walk_layers({"torch": resnet["torch"], "onnx": resnet["onnx"]}, resnet["x"])
    assert walk.first_split is None and len(walk.rows) >= 25


def _tensor(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    """The value of tensor ``name`` of the ONNX file, read by ONNX Runtime with the tensor as an output."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([name], {"image": x})[0]


def test_int8_twin_lists_agreement_worst_images_and_first_split(resnet):
    x = np.concatenate([resnet["x"], resnet["x"][:1] * 0.5])
    res = agnostic_cam.compare([resnet["onnx"], resnet["int8"]], x, ["gradcam", "eigencam"])
    assert res.pairs == ["onnx vs onnx-2"] and set(res.summary) == {"gradcam", "eigencam"}
    assert 0 < res.max_diff("eigencam") < 0.5  # quantization moves the maps, a little
    direct = {k: resnet[k].explain(x, "eigencam").heatmap for k in ("onnx", "int8")}  # forward only: cheap
    for k, name in (("onnx", "onnx"), ("int8", "onnx-2")):
        np.testing.assert_array_equal(res.explanations["eigencam"][name].heatmap, direct[k])
    grad = {k: e.heatmap for k, e in res.explanations["gradcam"].items()}  # Explanations of ex.explain, as returned
    per_image = (np.abs(direct["onnx"] - direct["int8"]).mean((1, 2))
                 + np.abs(grad["onnx"] - grad["onnx-2"]).mean((1, 2))) / 2
    assert res.worst_images() == sorted(range(3), key=lambda i: -per_image[i])
    tol = 1e-3
    walk = walk_layers([resnet["onnx"], resnet["int8"]], x, tol=tol)
    first = walk.first_split
    assert first is not None and first is walk.first_over and first["a"] == first["b"] == "/conv1/Conv_output_0"
    a, b = (_tensor(resnet["dir"] / f, first["a"], x) for f in ("r18.onnx", "r18_int8.onnx"))
    ref = np.abs(a.astype(np.float64) - b).max() / np.abs(b).max()
    assert ref > tol and abs(first["act_rel"] - ref) <= 1e-6 * ref


def test_qdq_int8_twin_lists_agreement_worst_images_and_first_split(resnet):
    """The static QDQ int8 twin (QuantizeLinear/DequantizeLinear pairs, calibrated on random images): per-method
    agreement and the worst images are listed, and the layer walk names a first split whose activation
    difference equals a direct ONNX Runtime read of the two tensors."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Images(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(3)
            self.batches = iter([{"image": rng.random((1, 3, 64, 64), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    qdq = resnet["dir"] / "r18_qdq.onnx"
    quantize_static(str(resnet["dir"] / "r18.onnx"), str(qdq), Images(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    twin = Explainer.from_onnx(qdq)
    x = resnet["x"]
    res = agnostic_cam.compare([resnet["onnx"], twin], x, ["eigencam"])
    assert res.pairs == ["onnx vs onnx-2"] and 0 < res.max_diff("eigencam") < 0.5
    direct = np.abs(resnet["onnx"].explain(x, "eigencam").heatmap - twin.explain(x, "eigencam").heatmap).mean((1, 2))
    assert res.worst_images() == sorted(range(len(x)), key=lambda i: -direct[i])
    tol = 1e-3
    walk = walk_layers([resnet["onnx"], twin], x, tol=tol)
    first = walk.first_over
    assert first is not None
    a, b = _tensor(resnet["dir"] / "r18.onnx", first["a"], x), _tensor(qdq, first["b"], x)
    ref = np.abs(a.astype(np.float64) - b).max() / np.abs(b).max()
    assert ref > tol and abs(first["act_rel"] - ref) <= 1e-6 * ref


def test_table_frame_csv_and_figure(demo, tmp_path):
    exs, x, y = demo
    res = agnostic_cam.compare({"torch": exs["torch"], "onnx": exs["onnx"]}, x[:2], ["gradcam", "eigencam"],
                               image_names=["=cmd()", "b"])
    recs = res.to_records()
    assert len(recs) == 4 and recs[0]["name"] == "=cmd()"
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="to_records"):
            res.to_frame()
    else:
        frame = res.to_frame()
        assert frame.shape == (4, len(recs[0])) and list(frame["max_diff"]) == [r["max_diff"] for r in recs]
    rows = list(csv.DictReader(res.to_csv(tmp_path / "c.csv").open()))
    assert len(rows) == 4 and rows[0]["name"] == "'=cmd()"  # no formula runs in a spreadsheet
    assert float(rows[0]["max_diff"]) == pytest.approx(recs[0]["max_diff"], rel=1e-5, abs=1e-12)
    json.dumps(res.to_dict())
    fig = res.figure(2)
    assert len(fig.axes) >= 2 * 2 * 2  # methods x (images x models), plus the colour bar
    assert "gradcam" in res.table() and "torch vs onnx" in res.table()


def _png(path: Path, seed: int) -> None:
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)


def test_cli_compares_two_onnx_files_writes_and_resumes(resnet, tmp_path, capsys):
    from agnostic_cam.cli import main

    imgs, out = tmp_path / "imgs", tmp_path / "out"
    imgs.mkdir()
    for i in range(3):
        _png(imgs / f"im{i}.png", i)
    (imgs / "broken.png").write_bytes(b"not a png")
    a, b = str(resnet["dir"] / "r18.onnx"), str(resnet["dir"] / "r18_int8.onnx")
    argv = ["-q", "compare", a, b, str(imgs), "--methods", "eigencam,ablationcam", "--out", str(out), "--walk",
            "--batch-images", "2"]
    assert main(argv) == 1  # one image could not be read
    res = json.loads((out / "results.json").read_text())
    assert res["models"] == ["r18", "r18_int8"] and len(res["run"]["computed"]) == 3
    assert [f["file"] for f in res["run"]["failed"]] == ["broken.png"]
    assert res["walk"]["first_split"]["a"] == "/conv1/Conv_output_0"
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert len(rows) == 3 * 2 and {r["method"] for r in rows} == {"eigencam", "ablationcam"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "first split" in html and "broken.png" in html
    strips = {p: p.stat().st_mtime_ns for p in (out / "overlays").iterdir()}
    assert main(argv) == 1
    again = json.loads((out / "results.json").read_text())
    assert again["run"]["computed"] == [] and len(again["run"]["reused"]) == 3
    assert {p: p.stat().st_mtime_ns for p in (out / "overlays").iterdir()} == strips
    assert list(csv.DictReader((out / "compare.csv").open())) == rows
    capsys.readouterr()
    assert main(["-q", "compare", a, b, str(imgs), "--methods", "nope", "--out", str(out)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err  # said before either model is loaded
    assert main(["-q", "compare", a, str(imgs), "--out", str(out)]) == 2


def test_report_renders_in_headless_chromium(resnet, tmp_path):
    from PIL import Image

    from agnostic_cam.compare.command import run_compare

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        _png(imgs / f"im{i}.png", 10 + i)
    run_compare([str(resnet["dir"] / "r18.onnx"), str(resnet["dir"] / "r18_int8.onnx")], imgs, tmp_path / "out",
                "eigencam", walk=True)
    shots = _load(ROOT / "scripts" / "screenshots.py", "screenshots")
    png = shots.shoot(tmp_path / "out" / "report.html", tmp_path / "shot.png", width=1200, height=1400)
    px = np.asarray(Image.open(png).convert("RGB"), np.float64)
    assert px.std() > 10  # text, tables and heatmaps, not a blank page
    assert (np.abs(px - px[0, 0]).sum(-1) > 60).mean() > 0.01


def test_cli_takes_a_keras_file_and_a_pytorch_factory(demo, tmp_path):
    from agnostic_cam.cli import main

    exs, _, _ = demo
    exs["keras"].adapter.model.save(tmp_path / "twin.keras")
    imgs, out = tmp_path / "imgs", tmp_path / "out"
    imgs.mkdir()
    for i in range(2):
        _png(imgs / f"im{i}.png", 20 + i)
    factory = "agnostic_cam.demo.torch_model:load_demo_net"
    assert main(["-q", "compare", factory, str(tmp_path / "twin.keras"), str(imgs), "--methods", "gradcam",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["models"] == ["load_demo_net", "twin"] and res["layers"]["twin"] == "relu3"  # picked by each
    s = res["summary"]["gradcam"]["load_demo_net vs twin"]
    assert s["images"] == 2 and s["max_diff"] <= 1e-4 and s["top1_agree"] == 1.0
    assert main(["-q", "compare", "nomodule_xyz:build", str(tmp_path / "twin.keras"), str(imgs), "--out",
                 str(out)]) == 2


def test_ray_engine_gives_the_local_records_and_resumes_across_engines(resnet, ray_cluster, tmp_path):
    """A real local Ray (2 CPUs, one actor loading both ONNX files); forward-only method, 3 images. The Ray
    session (conftest's ``ray_cluster``) is shared with tests/test_audit_ray.py: one start for both."""
    from agnostic_cam.compare.command import run_compare

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        _png(imgs / f"im{i}.png", 30 + i)
    specs = [str(resnet["dir"] / "r18.onnx"), str(resnet["dir"] / "r18_int8.onnx")]
    # batch_images=1 on both: a dynamic int8 graph quantizes activations with one scale per batch, so its
    # outputs depend on which images share the batch (measured: 8.6e-3 vs 1.5e-2 for one image)
    # the local runs take the module's explainers of the same files, under the names the specs get (a record's
    # fingerprint holds the specs and names, so the local engine still reuses what Ray computed): loading
    # both files again for each local run was a third of this test's time; the Ray actor loads the specs
    mine = {"r18": resnet["onnx"], "r18_int8": resnet["int8"]}
    local = run_compare(specs, imgs, tmp_path / "local", "eigencam", batch_images=1, explainers=mine)
    on_ray = run_compare(specs, imgs, tmp_path / "ray", "eigencam", engine="ray", workers=1, batch_images=1)
    assert ray_cluster.is_initialized()  # the engine used the running cluster and left it running
    assert on_ray["models"] == local["models"] == list(mine)
    assert sorted(on_ray["run"]["computed"]) == ["im0.png", "im1.png", "im2.png"]
    for a, b in zip(local["rows"], on_ray["rows"]):
        assert a["image"] == b["image"] and a["max_diff"] == pytest.approx(b["max_diff"], abs=1e-6)
    again = run_compare(specs, imgs, tmp_path / "ray", "eigencam", batch_images=1, explainers=mine)  # reuses Ray's
    assert again["run"]["computed"] == [] and len(again["run"]["reused"]) == 3
