"""The demo page's data (sections of figures and tables) and its rendering through a Jinja2 template."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Figure:
    """One PNG of the page; ``caption`` and ``heading`` are plain text (```code``` spans allowed)."""

    file: str
    caption: str = ""
    heading: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    key: str
    title: str
    intro: str
    figures: list[Figure] = field(default_factory=list)
    table: Table | None = None


def timing_table(rows: list[tuple[str, float]], what: str) -> Table:
    return Table([what, "time"], [[n, f"{s * 1000:.0f} ms"] for n, s in rows])


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that are not installed (without importing any of them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def row_labels(classes, labels, preds) -> tuple[list[str], list[bool]]:
    """'true X / pred Y' per image and which predictions are wrong."""
    titles = [f"true {classes[y]}\npred {classes[p]}" for y, p in zip(labels, preds)]
    return titles, [int(y) != int(p) for y, p in zip(labels, preds)]


def write_page(out: Path, intro: str, sections: list[Section], skipped: list[tuple[str, str]]) -> Path:
    from agnostic_cam.render.templating import render

    index = out / "index.html"
    index.write_text(render("demo.html.j2", intro=intro, sections=sections, skipped=skipped), encoding="utf-8")
    return index
