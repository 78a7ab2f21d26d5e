"""HTML pages from Jinja2 templates (``agnostic_cam/templates``), autoescaped.

Every value is escaped unless a template says otherwise; the one exception is :func:`code_spans`,
which escapes its text first and then turns ```name``` into ``<code>name</code>``.
"""
from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1)
def environment():
    import jinja2
    from markupsafe import Markup, escape

    def code_spans(text: str) -> Markup:
        return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))

    env = jinja2.Environment(loader=jinja2.PackageLoader("agnostic_cam", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["code"] = code_spans
    return env


def render(template: str, **context) -> str:
    """The template ``template`` (a file in agnostic_cam/templates) rendered with ``context``."""
    return environment().get_template(template).render(**context)
