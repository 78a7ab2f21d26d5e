"""The house's rules, checked by tools rather than by memory (DESIGN.md §4, issue 23).

- import-linter's contracts in pyproject.toml: methods/, core/ and targets/ import no framework, adapter
  or engine; adapters import neither the CLI, the audit nor the explainer; no import circles.
- At most 12 modules at the package root; no file over 300 lines.
- The explainer never probes a method (``hasattr`` / ``getattr`` / ``inspect``): the contract is
  declared on ``Method``.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "agnostic_cam"


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency (requirements-dev.txt)"
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    m = re.search(r"Contracts: (\d+) kept, (\d+) broken", r.stdout)
    assert m and int(m.group(1)) >= 4 and m.group(2) == "0", r.stdout  # every contract of pyproject.toml ran


def test_root_shows_the_architecture():
    modules = sorted(p.name for p in PKG.glob("*.py"))
    assert len(modules) <= 12, modules
    for folder in ("core", "targets", "methods", "adapters", "engine", "evaluation", "audit", "features"):
        assert (PKG / folder / "__init__.py").is_file(), folder
    for sub in ("pytorch", "keras", "onnx"):
        assert (PKG / "adapters" / sub / "__init__.py").is_file(), sub


def test_no_file_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


def test_explainer_does_not_probe_methods():
    tree = ast.parse((PKG / "explainer.py").read_text())
    probes = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
              and n.func.id in ("hasattr", "getattr")]
    imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in n.names} | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not probes, f"explainer.py probes with hasattr/getattr at lines {probes}"
    assert "inspect" not in imports


def test_old_documented_import_paths_still_work():
    """Paths earlier READMEs showed answer with the module at its new home (agnostic_cam/_moved.py)."""
    code = ("import agnostic_cam.metrics as a, agnostic_cam.evaluation.metrics as b; assert a is b\n"
            "from agnostic_cam.sanity import model_randomization\n"
            "from agnostic_cam.road import road\n"
            "from agnostic_cam.viz import compare_figure\n"
            "from agnostic_cam.preprocess import Preprocess\n"
            "from agnostic_cam.layout import LayerLayout\n"
            "from agnostic_cam.imaging import resize_bilinear\n"
            "from agnostic_cam.targets import DetectionBoxes, SegmentationMask, Similarity\n"
            "import sys; assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
