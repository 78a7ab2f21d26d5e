"""One place that validates option values, so every method rejects the same bad values the same way.

``Explainer.explain`` runs :func:`check_options` on the options of every method before the method
is built: an option whose *name* is listed in :data:`RULES` (``batch_size``, ``steps``, ``samples``,
``noise``, ``seed``, ``baseline``...) is checked here, whichever method takes it. Methods call the
small checkers (:func:`positive_int`, :func:`finite_number`) for anything method-specific.
Every failure is an :class:`~agnostic_cam.errors.OptionError` (or a
:class:`~agnostic_cam.errors.NonFiniteError` for NaN/Inf) that names the option and the fix.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np

from agnostic_cam.errors import NonFiniteError, OptionError


def positive_int(name: str, value: Any, lo: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int >= ``lo`` (None allowed when ``optional``); rejects bools, floats, strings."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral) or value < lo:
        extra = " or None (automatic)" if optional else ""
        raise OptionError(f"{name} must be an int >= {lo}{extra}; got {value!r}")
    return int(value)


def finite_number(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                  optional: bool = False) -> float | None:
    """``value`` as a finite float in [lo, hi] (None allowed when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise OptionError(f"{name} must be a number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise NonFiniteError(f"{name} must be a finite number; got {value!r}", where=f"option {name}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
        raise OptionError(f"{name} must be {rng}; got {value!r}")
    return v


def finite_array(name: str, value: Any) -> Any:
    """A number or array option (e.g. a baseline image) that must not hold NaN/Inf; returned as is."""
    if value is None or isinstance(value, str):
        return value
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be a number or a numeric array; got {type(value).__name__}") from None
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise NonFiniteError(f"{name} contains {bad} NaN or Inf value(s); pass finite numbers", where=f"option {name}")
    return value


def _seed(name: str, value: Any) -> Any:
    if value is None or isinstance(value, np.random.Generator):
        return value
    return positive_int(name, value, lo=0)


# option name -> checker(name, value) returning the (normalised) value
RULES: dict[str, Callable[[str, Any], Any]] = {
    "batch_size": lambda n, v: positive_int(n, v, optional=True),
    "steps": positive_int,
    "samples": positive_int,
    "n_samples": positive_int,
    "top_k": positive_int,
    "noise": lambda n, v: finite_number(n, v, lo=0.0),
    "stdev": lambda n, v: finite_number(n, v, lo=0.0),
    "seed": _seed,
    "baseline": finite_array,
}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate the options in ``options`` whose names :data:`RULES` knows; returns a new dict with
    normalised values (numpy ints -> int...). Unknown names pass through for the method to judge."""
    return {k: (RULES[k](k, v) if k in RULES else v) for k, v in options.items()}


__all__ = ["RULES", "check_options", "finite_array", "finite_number", "positive_int"]
