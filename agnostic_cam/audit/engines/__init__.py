"""Audit engines: they only decide where and how many images run at once.

An engine is a function ``(ctx, items, workers=..., **options) -> iterator of Result`` that yields
one :class:`~agnostic_cam.audit.record.Result` per item (any order), each made by
:func:`agnostic_cam.audit.record.compute_records`. Resume, report and metrics know nothing about
engines.
"""
from __future__ import annotations

ENGINES = ("local", "ray")


def get_engine(name: str):
    """The engine function called ``name`` ('local' or 'ray')."""
    if name == "local":
        from agnostic_cam.audit.engines.local import run_local

        return run_local
    if name == "ray":
        from agnostic_cam.audit.engines.ray import run_ray

        return run_ray
    from agnostic_cam.errors import OptionError

    raise OptionError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
