"""The documentation runs as written: every ```python block of README.md and of each docs/ page, and
the site itself (`mkdocs build --strict`, API reference generated from the docstrings).

Each page's blocks run in order, in one namespace per page, in a scratch folder. Blocks that are not
meant to run use another fence language (```bash for shell commands, ```text for output and
diagrams, ```yaml for files); a ```text block may not hide a Python example.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
LANGUAGES = {"python", "bash", "text", "yaml", "json"}
PYTHON_LOOKING = re.compile(r"^\s*(from agnostic_cam\b|import agnostic_cam\b|ex = Explainer)", re.M)


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the page, in order."""
    return [(lang.strip(), code) for lang, code in FENCE.findall(page.read_text(encoding="utf-8"))]


def _id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_fences_are_honest(page):
    """Every block names a known language, and Python code is fenced as ```python (so it runs)."""
    for i, (lang, code) in enumerate(blocks(page)):
        assert lang in LANGUAGES, f"{_id(page)} block {i}: fence language {lang!r}, use one of {sorted(LANGUAGES)}"
        if lang != "python":
            assert not PYTHON_LOOKING.search(code), f"{_id(page)} block {i}: Python example fenced as {lang!r}"


@pytest.mark.parametrize("page", [p for p in PAGES if any(lang == "python" for lang, _ in blocks(p))], ids=_id)
def test_python_blocks_run(page, tmp_path, monkeypatch, torch):
    from agnostic_cam.methods import base

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # methods a page registers leave with it
    namespace = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for i, (lang, code) in enumerate(blocks(page)):
        if lang == "python":
            exec(compile(code, f"{_id(page)} block {i}", "exec"), namespace)
    if page.name == "README.md":
        assert (tmp_path / "gradcam.png").stat().st_size > 1000


def test_every_page_is_in_the_site():
    """Each docs page (but the package index's text, pypi.md) is in mkdocs.yml's navigation."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted(DOCS.rglob("*.md")):
        rel = page.relative_to(DOCS).as_posix()
        if rel != "pypi.md":
            assert re.search(rf"(^|\s){re.escape(rel)}\s*$", nav, re.M), f"{rel} is not in mkdocs.yml's nav"


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    api = (site / "api" / "explainer" / "index.html").read_text(encoding="utf-8")
    assert "Explainer" in api and "from_torch" in api and "from_onnx" in api
    assert "NonFiniteError" in (site / "api" / "errors" / "index.html").read_text(encoding="utf-8")
    assert "LayerLayout" in (site / "api" / "layout" / "index.html").read_text(encoding="utf-8")
    classes = (site / "api" / "method-classes" / "index.html").read_text(encoding="utf-8")
    assert "GuidedScoreCAM" in classes and "KernelSHAP" in classes  # built at import time / read from source
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Getting started" in home and (site / "img" / "cam_family.png").is_file()


def test_shell_examples_use_real_options(capsys):
    """The `agnostic-cam` command lines of the ```bash blocks name sub-commands and options the CLI has.
    Each --help is read in this process (the `python -m agnostic_cam.cli ... --help` entry point itself
    is run in a subprocess by tests/test_cli.py)."""
    from agnostic_cam.cli import main

    calls: dict[str, set[str]] = {}
    for page in PAGES:
        for lang, code in blocks(page):
            if lang == "bash":
                for line in code.replace("\\\n", " ").splitlines():
                    words = line.split("#")[0].split()
                    if words[:1] == ["agnostic-cam"] and len(words) > 1:
                        calls.setdefault(words[1], set()).update(w.split("=")[0] for w in words if w.startswith("-"))
    assert {"layers", "explain", "audit"} <= set(calls)
    for sub, options in sorted(calls.items()):
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([sub, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and "usage: agnostic-cam" in out, out[-2000:]
        missing = sorted(o for o in options if not re.search(rf"(^|[\s,\[]){re.escape(o)}\b", out))
        assert not missing, f"agnostic-cam {sub}: options {missing} are not in its --help"


def test_readme_links_resolve():
    """The README's relative links (to the docs pages and pictures) name files that exist."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if "://" not in link:
            assert (ROOT / link).is_file(), link
    assert len(text.splitlines()) <= 300 and "make demo" in text and "make test" in text


def test_every_method_class_is_in_the_api_reference():
    """Each registered method's class has an entry on the API page of method classes."""
    import agnostic_cam

    page = (DOCS / "api" / "method-classes.md").read_text(encoding="utf-8")
    entries = set(re.findall(r"^::: (\S+)$", page, re.M))
    for name, cls in agnostic_cam.registry().items():
        assert f"{cls.__module__}.{cls.__qualname__}" in entries, f"method {name!r} ({cls.__qualname__}) is not on the page"
