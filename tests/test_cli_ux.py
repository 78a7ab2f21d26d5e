"""The CLI's first-contact surface: --version, method lists in --help, unknown-option messages
that list the method's real options, logging instead of prints, the `layers` table."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import agnostic_cam
from agnostic_cam.cli import build_parser, main, table
from agnostic_cam.methods import get_method, registry
from agnostic_cam.methods.base import method_options

PKG = Path(agnostic_cam.__file__).parent


def test_version_and_method_list(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"agnostic-cam {agnostic_cam.__version__}"
    for cmd in ([], ["explain"], ["audit"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*cmd, "--help"])
        out = capsys.readouterr().out
        for name in registry():
            assert f"\n  {name} " in out, (cmd, name)
        assert "scorecam               batch_size, dedup" in out


def test_method_options_are_the_real_ones():
    assert method_options(get_method("gradcam")) == []
    assert method_options(get_method("scorecam")) == ["batch_size", "dedup"]
    assert method_options(get_method("guided_scorecam")) == ["upsample", "normalize", "batch_size", "dedup"]
    for cls in registry().values():
        assert not {"args", "kwargs", "self"} & set(method_options(cls))


def test_unknown_option_message(torch, small_cnn):
    from agnostic_cam import Explainer
    from agnostic_cam.errors import OptionError

    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    x = np.zeros((1, 3, 16, 16), np.float32)
    # batch_size is an explain option every method takes (tests/test_reliability_limits.py), so the
    # unknown option here is one that gradcam does not take but other methods do
    with pytest.raises(OptionError) as e:
        ex.explain(x, "gradcam", steps=4)
    msg = str(e.value)
    assert "['steps']" in msg and "it takes: aug_smooth, eigen_smooth, batch_size." in msg and "'args'" not in msg
    with pytest.raises(OptionError, match=r"Did you mean 'batch_size' for 'batchsize'\?"):
        ex.explain(x, "scorecam", batchsize=4)


def test_no_bare_print_in_the_library():
    """The library logs (logging) and writes command output explicitly; print() appears nowhere."""
    offenders = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert offenders == []


def test_layers_table_json_and_logging(tmp_path, torch, capsys):
    from onnx_helpers import export_torch, torch_net

    p = tmp_path / "net.onnx"
    onnx.save(export_torch(torch_net(), 32), str(p))
    assert main(["layers", str(p), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["tensor"] for r in rows if r["default"]] == ["/feat/Relu_output_0"]
    assert main(["layers", str(p)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1]
    starts = [header.index(h) for h in ("op", "shape", "layout", "node")]
    for line, r in zip(lines[2:], rows):  # every column starts where its header does
        assert [line[s:].split()[0] for s in starts] == [r["op"], "x".join(map(str, r["shape"])), r["layout"],
                                                         r["node"].split()[0]]
    assert main(["-q", "explain", str(p), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.png" in capsys.readouterr().err  # errors still show with --quiet


def test_table():
    assert table(("a", "bb"), [("xyz", "1"), ("q", "22")], ["*", " "]).splitlines() == [
        "  a    bb", "* xyz  1", "  q    22"]


def test_audit_overlays_labels_and_progress(tmp_path, torch, capsys):
    """Overlays keep each image's aspect ratio; a labels file with too few names is refused before any
    image runs; the progress bar moves per method inside a batch (fractional image counts)."""
    from PIL import Image

    from agnostic_cam.audit.runner import method_ticks
    from agnostic_cam.demo.data import make_shapes
    from onnx_helpers import export_torch, torch_net

    model = tmp_path / "net.onnx"
    onnx.save(export_torch(torch_net(), 32), str(model))
    d = tmp_path / "images"
    d.mkdir()
    x, _, _ = make_shapes(2, size=48, seed=1, layout="NHWC")
    Image.fromarray((x[0, :30] * 255).astype(np.uint8)).save(d / "wide.png")      # 30 x 48
    Image.fromarray((x[1, :, :20] * 255).astype(np.uint8)).save(d / "tall.png")   # 48 x 20
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    args = ["audit", str(model), str(d), "--out", str(tmp_path / "o"), "--methods", "eigencam", "--steps", "3",
            "--no-progress"]
    assert main([*args, "--labels", str(labels)]) == 2
    assert "labels file has 2 class names but the model has" in capsys.readouterr().err
    assert main(args) == 0
    for stem, shape in (("wide", (30, 48, 3)), ("tall", (48, 20, 3))):
        for kind in ("input", "eigencam"):
            (png,) = (tmp_path / "o" / "overlays").glob(f"{stem}-*__{kind}.png")
            assert np.asarray(Image.open(png)).shape == shape

    class Bar:
        n = 0.0

        def update(self, v):
            self.n += v

        def set_postfix_str(self, s, refresh=True):
            self.post = s

    bar = Bar()
    tick = method_ticks(bar, 3)
    tick(["a", "b"], "gradcam")
    assert bar.n == pytest.approx(2 / 3) and "gradcam" in bar.post
    for _ in range(4):  # never more than one image's worth per image
        tick(["a"], "scorecam")
    assert tick.credit["a"] == pytest.approx(1.0) and bar.n == pytest.approx(1 + 1 / 3)
