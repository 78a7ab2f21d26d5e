"""The suite runs from any working directory: tests import their helpers as top-level modules
(tests/ is on sys.path through the rootdir conftest), never as ``tests.x`` - tf2onnx installs a
top-level ``tests`` package that shadows ours outside the repository root."""
import re
from pathlib import Path


def test_no_test_imports_through_a_tests_package():
    here = Path(__file__).parent
    bad = [f"{p.name}:{i}" for p in sorted(here.glob("*.py")) for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.match(r"\s*(from|import)\s+tests(\.|\s|$)", line)]
    assert bad == [], bad
