"""The options a registered method takes, for messages and ``--help`` (no instance needed)."""
from __future__ import annotations

import inspect

from agnostic_cam.methods.base import Method, get_method

EXPLAIN_OPTIONS = ("aug_smooth", "eigen_smooth", "batch_size")  # taken by Explainer.explain for every method


def method_options(mcls: type[Method]) -> list[str]:
    """Named keyword options of ``mcls`` (its ``__init__`` up the class chain, ``*args``/``**kwargs``
    left out), plus those of the CAM a guided method wraps (``mcls.cam``)."""
    names: list[str] = []
    for klass in mcls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                names.append(p.name)
        break  # the first __init__ found is the one that runs
    inner = getattr(mcls, "cam", "")
    if isinstance(inner, str) and inner:
        names += [n for n in method_options(get_method(inner)) if n not in names]
    return names


def unknown_option_message(mcls: type[Method], options: dict) -> str:
    """``method 'gradcam' got unknown option(s) ['batchsize']; it takes: ...`` with close matches."""
    import difflib

    own = method_options(mcls)
    valid = own + [o for o in EXPLAIN_OPTIONS if o not in own]
    unknown = sorted(k for k in options if k not in valid) or sorted(options)
    close = {k: difflib.get_close_matches(k, valid, n=1, cutoff=0.6) for k in unknown}
    hint = "".join(f" Did you mean {c[0]!r} for {k!r}?" for k, c in close.items() if c)
    takes = ", ".join(valid)
    return f"method {mcls.name!r} got unknown option(s) {unknown}; it takes: {takes}.{hint}"
