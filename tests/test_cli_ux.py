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
from agnostic_cam.methods.options import method_options

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
    with pytest.raises(OptionError) as e:
        ex.explain(x, "gradcam", batch_size=4)
    msg = str(e.value)
    assert "['batch_size']" in msg and "it takes: aug_smooth, eigen_smooth" in msg and "'args'" not in msg
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
