"""Faults found by probing as a new user would (issue 29): each gives a typed error naming the fix,
or the right result.

Reduced for speed: a 32 px ONNX CNN (torch_net), 3 random images, Eigen-CAM with 3 curve steps.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from agnostic_cam import Explainer
from agnostic_cam.cli import main
from agnostic_cam.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(onnx_net32):
    return onnx_net32  # one export for the whole session (conftest)


def _images(d: Path, n: int = 3) -> Path:
    d.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"im{i}.png")
    return d


def _audit(model, images, out, *extra):
    return main(["audit", str(model), str(images), "--out", str(out), "--steps", "3", "--no-progress",
                 "--methods", "eigencam", *extra])


@pytest.mark.parametrize("inside", [False, True], ids=["out-is-images", "out-inside-images"])
def test_audit_never_reads_its_own_outputs(model, tmp_path, inside):
    imgs = _images(tmp_path / "imgs")
    out = imgs / "res" if inside else imgs
    for _ in range(2):  # the second run sees the first run's overlays/ in the image folder
        assert _audit(model, imgs, out) == 0
        res = json.loads((out / "results.json").read_text())
        assert sorted(r["file"] for r in res["images"]) == ["im0.png", "im1.png", "im2.png"]
    assert len(list((out / "overlays").glob("*.png"))) >= 3  # the overlays are there, and were not read


def test_labels_not_utf8_is_a_typed_error_naming_file_and_fix(model, tmp_path, caplog):
    imgs = _images(tmp_path / "imgs")
    labels = tmp_path / "labels.txt"
    names = "chat\ncaf\u00e9\nna\u00efve\nbo\u00eete\n\u00e9t\u00e9\n"  # 5 classes
    labels.write_bytes(names.encode("latin-1"))
    assert _audit(model, imgs, tmp_path / "out", "--labels", str(labels)) == 2
    assert "labels.txt is not UTF-8" in caplog.text and "save it as UTF-8" in caplog.text
    assert "Traceback" not in caplog.text
    labels.write_text(names, encoding="utf-8")  # the fix works
    assert _audit(model, imgs, tmp_path / "out2", "--labels", str(labels)) == 0


HUGE = r"""
import resource, sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))  # fail fast, whatever the machine's memory
B = 100000  # its Conv output alone, 100000 x 64 x 16 x 16 float32 (6.5 GB), is over the 6 GiB limit: fails anywhere
rng = np.random.default_rng(0)
init = [numpy_helper.from_array(rng.normal(size=(64, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(5, 64)).astype(np.float32), "F")]
nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["relu"]),
         helper.make_node("GlobalAveragePool", ["relu"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "F"], ["y"], transB=1)]
g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, 3, 16, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, 5])], init)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
from agnostic_cam import Explainer
from agnostic_cam.errors import ModelError
try:
    Explainer.from_onnx(m, "relu", progress=False).explain(np.zeros((1, 3, 16, 16), np.float32), "eigencam")
except ModelError as e:
    print("EXPLAIN", e)
import onnx
onnx.save(m, sys.argv[1] + "/huge.onnx")
from agnostic_cam.cli import main
print("AUDIT", main(["audit", sys.argv[1] + "/huge.onnx", sys.argv[1] + "/imgs", "--out", sys.argv[1] + "/out",
                    "--steps", "3", "--no-progress", "--methods", "eigencam", "--layer", "relu"]))
"""


def test_huge_fixed_batch_is_a_typed_error(tmp_path):
    """100,000 declared rows: ONNX Runtime's allocation failure comes out as a ModelError naming
    the fix, from explain and from the audit (run under an address-space limit, so it fails fast).
    Reduced for time from 200,000 (the issue's example): padding one image to the fixed batch fills
    the whole input, 0.6 GB there (5.2 s for this test), 0.3 GB here (2.2 s), and the failure is the same."""
    _images(tmp_path / "imgs", 1)
    proc = subprocess.run([sys.executable, "-c", HUGE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    text = proc.stdout + proc.stderr
    assert "EXPLAIN ONNX Runtime ran out of memory" in proc.stdout and "export it with a dynamic batch" in proc.stdout
    assert "Traceback" not in text, text[-3000:]
    assert "AUDIT" in proc.stdout and "dynamic batch dimension" in text


def test_bytes_of_a_model_with_external_data_name_the_fix(model, tmp_path):
    proto = onnx.load(str(model))
    path = tmp_path / "ext.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    with pytest.raises(ModelError, match=r"external data files \(ext.data\).*pass the path of the .onnx file"):
        Explainer.from_onnx(path.read_bytes(), progress=False)
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    a = Explainer.from_onnx(str(path), progress=False).explain(x, "eigencam")  # the fix works
    b = Explainer.from_onnx(str(model), progress=False).explain(x, "eigencam")
    np.testing.assert_array_equal(a.heatmap, b.heatmap)


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "scorecam", "ablationcam", "layercam", "kpcacam"])
def test_one_position_map_one_rule_for_every_layer_method(small_cnn, method):
    """small_cnn at 2x2 input: act3 is 1x1. Every method that reads the layer refuses alike."""
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    x = np.random.default_rng(0).normal(size=(1, 3, 2, 2)).astype(np.float32)
    with pytest.raises(ModelError, match=r"1x1 map.*(larger input images|earlier layer)"):
        ex.explain(x, method, target=0)
    assert ex.explain(np.repeat(np.repeat(x, 4, 2), 4, 3), method, target=0).heatmap.shape == (1, 8, 8)


def test_a_failed_layer_check_is_made_again_at_the_next_call(torch):
    """The PyTorch adapter recorded the input size before its layer checks finished: after a
    LayoutError (a (1, 8, 8, 8) layer that reads as NCHW or NHWC), the second explain at that size
    skipped the checks and returned a map of the unresolved layout. Every call must refuse it."""
    from torch import nn

    from agnostic_cam.errors import LayoutError

    class ToNHWC(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.nhwc = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), ToNHWC()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.nhwc(self.act(self.conv(x))).mean((1, 2)))

    torch.manual_seed(0)
    net = Net().eval()
    x = np.random.default_rng(0).uniform(size=(1, 3, 8, 8)).astype(np.float32)
    ex = Explainer.from_torch(net, "nhwc", progress=False)
    for method in ("gradcam", "gradcam", "eigencam"):
        with pytest.raises(LayoutError, match="layer_layout='NCHW', 'NHWC'"):
            ex.explain(x, method, target=1)
    # the fix the error names works, and gives the map of the NCHW layer it is a view of
    fixed = Explainer.from_torch(net, "nhwc", layer_layout="NHWC", progress=False).explain(x, "gradcam", target=1)
    plain = Explainer.from_torch(net, "act", progress=False).explain(x, "gradcam", target=1)
    np.testing.assert_allclose(fixed.heatmap, plain.heatmap, atol=1e-6)
