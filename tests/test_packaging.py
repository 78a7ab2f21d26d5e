"""The wheel and sdist as a user gets them, built offline from a copy of the source tree with
setuptools' own PEP 517 hooks (what `python -m build --no-isolation` calls): contents and metadata."""
from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = {"onnxruntime", "onnxruntime-gpu"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "Makefile", "requirements-dev.txt"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("agnostic_cam", "tests", "docs", "scripts"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = src / "dist"
    code = (f"from setuptools import build_meta as b; w = b.build_wheel({str(out)!r}); "
            f"s = b.build_sdist({str(out)!r}); print('BUILT', w, s)")
    r = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel, sdist = r.stdout.strip().splitlines()[-1].split()[1:]
    return out / wheel, out / sdist


def _requires(meta) -> tuple[list[str], dict[str, list[str]]]:
    core, extras = [], {}
    for req in meta.get_all("Requires-Dist"):
        name = re.split(r"[<>=!~ ;\[]", req, maxsplit=1)[0].lower()
        m = re.search(r"extra == ['\"]([^'\"]+)['\"]", req)
        (extras.setdefault(m.group(1), []) if m else core).append(name)
    return core, extras


def test_wheel_contents_and_metadata(dists):
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(info))
        lic = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert lic and b"MIT License" in z.read(lic[0])
    assert "agnostic_cam/py.typed" in names and "agnostic_cam/__init__.py" in names
    assert "agnostic_cam/cli.py" in names and not any(n.startswith("tests/") for n in names)
    assert meta["License-Expression"] == "MIT" and meta["Name"] == "agnostic-cam"
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and any(c.startswith("Topic :: Scientific") for c in classifiers)
    assert "grad-cam" in meta["Keywords"]
    body = meta.get_payload()
    assert "pip install 'agnostic-cam[torch]'" in body and "![" not in body  # no relative image links on the index


def test_each_extra_brings_at_most_one_onnx_runtime(dists):
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
    core, extras = _requires(meta)
    assert not RUNTIMES & set(core)  # the core forces neither build
    assert set(meta.get_all("Provides-Extra")) >= {"cpu", "gpu", "torch", "torch-gpu", "keras", "all", "onnx-grad"}
    assert RUNTIMES & set(extras["cpu"]) == {"onnxruntime"} and RUNTIMES & set(extras["gpu"]) == {"onnxruntime-gpu"}
    for name, reqs in extras.items():  # add-on extras (onnx-grad, ray, ...) bring none
        assert len(RUNTIMES & set(reqs)) <= 1, name
        if name.endswith("-gpu"):
            assert RUNTIMES & set(reqs) == {"onnxruntime-gpu"}, name
    for name in ("torch", "keras", "all"):  # framework extras: the CPU runtime, so their quick starts run
        assert RUNTIMES & set(extras[name]) == {"onnxruntime"}, name
    assert not RUNTIMES & set(extras["onnx-grad"])
    assert {"torch", "torchvision"} <= set(extras["torch"]) and "torchvision" in extras["onnx-grad"]


def test_sdist_has_what_the_tests_need(dists):
    _, sdist = dists
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for need in ("tests/conftest.py", "tests/onnx_helpers.py", "tests/test_packaging.py", "LICENSE", "README.md",
                 "requirements-dev.txt", "Makefile", "agnostic_cam/py.typed", "docs/pypi.md"):
        assert need in names, need
