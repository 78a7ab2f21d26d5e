"""Every registered method's class docstring carries its paper (a year), its equation and a runnable
example, and the example runs (issue 23: the documentation site shows the class docstring)."""
from __future__ import annotations

import doctest
import io
import re
import warnings

import pytest

import agnostic_cam
from agnostic_cam.core.degenerate import DegenerateMapWarning

pytest.importorskip("torch")  # the examples explain agnostic_cam.demo.tiny's PyTorch CNN

METHODS = sorted(agnostic_cam.registry())
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def class_doc(name: str) -> str:
    cls = agnostic_cam.registry()[name]
    doc = cls.__dict__.get("__doc__")  # the class's own docstring, not one inherited from its base
    assert doc, f"{cls.__name__} ({name!r}) has no class docstring"
    return doc


@pytest.mark.parametrize("name", METHODS)
def test_docstring_names_paper_equation_and_example(name):
    doc = class_doc(name)
    assert re.search(r"\b(19|20)\d\d\b", doc), f"{name}: the class docstring names no year (the paper)"
    assert any("=" in line and ">>>" not in line for line in doc.splitlines()), \
        f"{name}: the class docstring has no equation (a line with '=' outside the example)"
    assert ">>>" in doc, f"{name}: the class docstring has no runnable example (>>> lines)"
    assert re.search(rf"method=[\"']{re.escape(name)}[\"']|[\"']{re.escape(name)}[\"']", doc), \
        f"{name}: the example does not explain with method {name!r}"


@pytest.mark.parametrize("name", METHODS)
def test_docstring_example_runs(name):
    cls = agnostic_cam.registry()[name]
    class_doc(name)
    tests = doctest.DocTestFinder(recurse=False, exclude_empty=True).find(cls, cls.__name__, globs={})
    assert tests and tests[0].examples, f"{name}: doctest finds no example in the class docstring"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateMapWarning)  # an example must show a map with something in it
        for t in tests:
            runner.run(t, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} example line(s) failed:\n{out.getvalue()}"
