"""Issue 26, continued: embedded maps from Keras and fp16 graphs, the audit reading a file's own map,
and docs/embed.md's examples (helpers in tests/test_embed.py)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")

from agnostic_cam import Explainer  # noqa: E402
from test_embed import bare_tiny_cnn, check_embedded, run_isolated  # noqa: E402


@pytest.mark.parametrize("name, methods", [
    # ResNet-50: the methods whose branch reads the model's head (cam, gradcam) or re-runs its tail (reciprocam);
    # activation_map and eigencam read the layer's tensor alone, the same branch as on ResNet-18 (test_embed.py),
    # and each embedded file here is 100 MB to write and load
    ("resnet50", ["cam", "gradcam", "reciprocam"]),
    ("efficientnet_b0", ["cam", "gradcam", "activation_map", "eigencam", "reciprocam"]),
    ("convnext_tiny", ["activation_map", "eigencam", "reciprocam"]),  # its head: LayerNorm2d, Flatten, Linear
])
def test_issue_models_every_embeddable_method_runs_without_us(tmp_path, name, methods):
    """Issue 26's torchvision list beyond ResNet-18 and MobileNetV3 (tests/test_embed.py): every method that
    embeds on the model (on ResNet-50, those whose branch depends on the model: see the parameters), at 64 px
    (a 2x2 last feature map; scripts/embed_check.py runs them all at 224 px)."""
    import torchvision

    from agnostic_cam.errors import ModelError

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    layer = "layer4" if name == "resnet50" else "features"
    ex = Explainer.from_torch(model, layer, input_shape=(3, 64, 64), progress=False)
    check_embedded(tmp_path, ex, np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32), methods)
    if "cam" not in methods:
        with pytest.raises(ModelError, match="global-average-pool \\+ linear head"):
            ex.embed(None, "cam")


def test_audit_reads_the_embedded_map_from_the_forward_pass(tmp_path):
    """A file with a 'saliency' output is audited on that map (method 'embedded'); with --embedded
    next to --methods both are scored, and the embedded map's metrics equal CAM's."""
    import json

    from PIL import Image

    from agnostic_cam.cli import main
    from agnostic_cam.demo.tiny import tiny_cnn

    ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
    ex.embed(tmp_path / "e.onnx", "cam", input_shape=(3, 32, 32))
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    assert main(["-q", "audit", str(tmp_path / "e.onnx"), str(tmp_path / "imgs"), "--out", str(tmp_path / "a"),
                 "--no-progress", "--steps", "4"]) == 0
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(res["images"][0]["methods"]) == {"embedded"}
    assert main(["-q", "audit", str(tmp_path / "e.onnx"), str(tmp_path / "imgs"), "--out", str(tmp_path / "b"),
                 "--no-progress", "--steps", "4", "--embedded", "--methods", "cam"]) == 0
    for rec in json.loads((tmp_path / "b" / "results.json").read_text())["images"]:
        own, cam = rec["methods"]["embedded"], rec["methods"]["cam"]
        assert abs(own["deletion_auc"] - cam["deletion_auc"]) < 1e-4
        assert abs(own["insertion_auc"] - cam["insertion_auc"]) < 1e-4


def test_docs_embed_python_blocks_run(tmp_path, monkeypatch):
    """docs/embed.md's examples run as written, and its onnxruntime snippet reads explain()'s map."""
    import re
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).resolve().parents[1] / "docs" / "embed.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    ns: dict = {"__name__": "docs_embed"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/embed.md block {i}", "exec"), ns)
    np.testing.assert_allclose(ns["saliency"], ns["ex"].explain(ns["x"], "cam").heatmap, atol=1e-5, rtol=0)


def test_keras_channels_last_model_runs_without_us(tmp_path):
    """from_keras: an NHWC graph from tf2onnx (ReduceMean over axes 1, 2, then MatMul + Add)."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(h)))
    ex = Explainer.from_keras(model, "conv2", progress=False)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    check_embedded(tmp_path, ex, x, ["cam", "eigencam", "reciprocam"], shape=(32, 32, 3))


def test_fp16_graph_keeps_its_precision(tmp_path):
    """An fp16 ONNX file (float32 I/O kept): the graph still computes in fp16, the explanation branch in
    float32 on its activations; the map equals explain()'s to fp16 rounding, the output is unchanged."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from agnostic_cam.demo.tiny import tiny_cnn, tiny_images

    src = onnx.ModelProto()
    src.CopyFrom(Explainer.from_torch(tiny_cnn(), "relu2", progress=False).adapter.engine((3, 32, 32)).model)
    keep = [o for o in src.graph.output if o.name == "output"]
    del src.graph.output[:]
    src.graph.output.extend(keep)
    onnx.save(convert_float_to_float16(src, keep_io_types=True), tmp_path / "m16.onnx")
    ex = Explainer.from_onnx(str(tmp_path / "m16.onnx"), gradients=False, progress=False)
    x = tiny_images()
    files = [tmp_path / "m16.onnx"] + [tmp_path / f"{m}.onnx" for m in ("cam", "reciprocam")]
    for m, f in zip(("cam", "reciprocam"), files[1:]):
        ex.embed(f, m)
    got = run_isolated(tmp_path, x, files)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(files[1]).graph.initializer)
    for m, g in zip(("cam", "reciprocam"), got[1:]):
        np.testing.assert_allclose(g["output"], got[0]["output"], atol=2e-3, rtol=0)
        np.testing.assert_allclose(g["saliency"], ex.explain(x, m).heatmap, atol=2e-3, rtol=0, err_msg=m)


def test_cli_input_shape_for_a_file_of_any_size(tmp_path):
    """An ONNX file with symbolic H, W: embed asks for --input-shape; the CAM then follows any input size."""
    import onnxruntime as ort

    from agnostic_cam.cli import main
    from agnostic_cam.demo.tiny import tiny_images

    src = bare_tiny_cnn()
    for d, name in zip(src.graph.input[0].type.tensor_type.shape.dim[2:], ("h", "w")):
        d.ClearField("dim_value")
        d.dim_param = name
    del src.graph.value_info[:]
    onnx.save(src, tmp_path / "dyn.onnx")
    args = ["-q", "embed", str(tmp_path / "dyn.onnx"), "--method", "cam", "-o", str(tmp_path / "e.onnx")]
    assert main(args) == 2
    assert main(args + ["--input-shape", "3,32,32"]) == 0
    sess = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    ex = Explainer.from_onnx(str(tmp_path / "dyn.onnx"), gradients=False, progress=False)
    for size in (32, 48):
        x = tiny_images(size=size)
        np.testing.assert_allclose(sess.run(["saliency"], {"input": x})[0], ex.explain(x, "cam").heatmap, atol=1e-5)


def test_keras_vit_reciprocam_masks_the_block_as_the_paper(tmp_path):
    """ViT-ReciproCAM on a Keras ViT (tf2onnx graph; tests/test_keras_vit.py's mini ViT, 32 px, a 4x4 grid):
    the tokens entering block 1 and its first LayerNorm's output, both masked (3x3 Gaussian, class token
    kept), through block 1's own layers and the head (reference written here with the model's layers);
    the embedded file gives the same map."""
    pytest.importorskip("keras")
    from test_keras_vit import GRID, mini_vit

    import keras

    model = mini_vit()
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    L = model.get_layer
    tokens = np.asarray(keras.Model(model.input, L("block0_add2").output)(x))
    logits = np.asarray(model(x))
    k = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16
    ref = np.zeros((2, GRID, GRID))
    for i in range(2):
        t, nt = tokens[i], np.asarray(L("block1_ln1")(tokens[i:i + 1]))[0]
        xm, nm = np.repeat(t[None], GRID * GRID, 0), np.repeat(nt[None], GRID * GRID, 0)
        for p in range(GRID * GRID):
            w = np.zeros((GRID + 2, GRID + 2), np.float32)
            w[p // GRID:p // GRID + 3, p % GRID:p % GRID + 3] = k
            xm[p, 1:] *= w[1:-1, 1:-1].reshape(-1, 1)
            nm[p, 1:] *= w[1:-1, 1:-1].reshape(-1, 1)
        h = xm + np.asarray(L("block1_mha")(nm, nm))
        h = h + np.asarray(L("block1_fc2")(L("block1_fc1")(L("block1_ln2")(h))))
        y = np.asarray(L("head")(L("pool")(L("final_ln")(h))), np.float64)
        e = np.exp(y - y.max(axis=1, keepdims=True))
        ref[i] = (e / e.sum(axis=1, keepdims=True))[:, logits[i].argmax()].reshape(GRID, GRID)
    for layer in ("block0_add2", "block1_ln1"):  # the block's input, or its norm (LayerNorm decomposed by tf2onnx)
        ex = Explainer.from_keras(model, layer, progress=False)
        np.testing.assert_allclose(ex.explain(x, "vit_reciprocam").raw, ref, atol=1e-5, rtol=0, err_msg=layer)
        (tmp_path / layer).mkdir()
        check_embedded(tmp_path / layer, ex, x, ["vit_reciprocam"], shape=(32, 32, 3))
