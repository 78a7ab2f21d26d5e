"""MkDocs hook: the package's docstrings cross-reference with reST-like roles (:class:`X`,
:meth:`~a.b.C.m`). Rendered as Markdown they read ":class:" followed by code; here each becomes
an optional autorefs link to the object's API entry (plain code where it has none), with
``~`` shortening the shown name to its last part, as Sphinx does. A name without its module
(:class:`ModelError`, :meth:`LayerLayout.to_chw`) is looked up among the names the package
defines once (read from the source by griffe, nothing imported)."""
from __future__ import annotations

import re
from pathlib import Path

ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")
_FULL: dict[str, str] = {}


def on_config(config, **kwargs):
    import griffe

    root = Path(config.config_file_path).parent
    seen: dict[str, set[str]] = {}

    def walk(obj) -> None:
        for member in obj.members.values():
            if member.is_alias:
                continue
            if member.is_module or member.is_class or member.is_function:
                seen.setdefault(member.name, set()).add(member.path)
            if member.is_module or member.is_class:
                walk(member)

    walk(griffe.load("agnostic_cam", search_paths=[str(root)], resolve_aliases=False))
    _FULL.clear()
    _FULL.update({name: next(iter(paths)) for name, paths in seen.items() if len(paths) == 1})
    return config


def _identifier(name: str) -> str:
    if name.startswith("agnostic_cam"):
        return name
    head, _, rest = name.partition(".")
    return _FULL[head] + ("." + rest if rest else "") if head in _FULL else name


def _link(m: re.Match) -> str:
    short, name, call = m.group(1), m.group(2), m.group(3) or ""
    shown = name.rsplit(".", 1)[-1] if short else name
    return f'<autoref identifier="{_identifier(name)}" optional><code>{shown}{call}</code></autoref>'


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub(_link, html)
