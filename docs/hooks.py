"""MkDocs hook: the package's docstrings cross-reference with reST-like roles (:class:`X`,
:meth:`~a.b.C.m`). Rendered as Markdown they read ":class:" followed by code; here each becomes
an optional autorefs link to the object's API entry (plain code where it has none), with
``~`` shortening the shown name to its last part, as Sphinx does."""
from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")


def _link(m: re.Match) -> str:
    short, name, call = m.group(1), m.group(2), m.group(3) or ""
    shown = name.rsplit(".", 1)[-1] if short else name
    return f'<autoref identifier="{name}" optional><code>{shown}{call}</code></autoref>'


def on_page_content(html: str, **kwargs) -> str:
    return ROLE.sub(_link, html)
