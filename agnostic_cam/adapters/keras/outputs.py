"""Multi-output Keras models -> the one output that is explained (``output=`` of ``from_keras``).

The same rules as ``from_torch`` / ``from_onnx``:

- ``output="raw"`` (default): the model's output; a model with several outputs must pick one.
- ``output="logits"``: the input of the final softmax of the model's (single) output.
- ``output=KEY`` (a str): the output of that key of a dict-output model
  (``keras.Model(x, {"cls": a, "box": b})``), or of the output layer of that name in a list-output
  model (``model.output_names``). An output named 'raw' or 'logits' wins over the keyword, as a
  graph output's name does in ``from_onnx``.
- ``output=INDEX`` (an int): that element of a list / tuple output (``keras.Model(x, [a, b])``).
- ``output="logits:KEY"`` / ``"logits:INDEX"``: the input of the final softmax of that output.

:func:`resolve` returns a :class:`Selection`: the chosen output's symbolic tensor, a function that
picks it out of the model's output structure, and whether its softmax is bypassed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agnostic_cam.errors import ModelError, OptionError

KEYWORDS = ("raw", "logits")


@dataclass
class Selection:
    """The explained output: ``tensor`` (symbolic), ``pick(structure) -> tensor``, ``logits``, ``label``."""

    tensor: Any
    key: Any  # a dict key, a list index, or None for a single output
    logits: bool
    label: str

    def pick(self, out: Any) -> Any:
        """The chosen tensor of the model's output structure ``out`` (as ``model(x)`` returns it)."""
        if self.key is None or not isinstance(out, (dict, list, tuple)):
            import tensorflow as tf

            return tf.nest.flatten(out)[0]
        return out[self.key]


def _structure(model) -> Any:
    try:
        return model.output
    except (AttributeError, ValueError):
        return model.outputs


def _describe(struct: Any, names: list[str]) -> str:
    if isinstance(struct, dict):
        return f"a dict of {len(struct)} outputs with keys {list(struct)}"
    return f"a list of {len(struct)} outputs (indices 0-{len(struct) - 1}; layer names {names})"


def resolve(model, output: str | int | None) -> Selection:
    """The :class:`Selection` ``output`` asks for (OptionError / ModelError name the choices)."""
    struct = _structure(model)
    names = list(getattr(model, "output_names", []) or [])
    single = not isinstance(struct, (dict, list, tuple)) or len(struct) == 1
    if output is None:
        output = "raw"
    if isinstance(output, bool) or not isinstance(output, (str, int)):
        raise OptionError(f"output must be 'raw', 'logits', an output's key or name (str) or index (int); got "
                          f"{type(output).__name__}")
    logits = False
    sel: str | int | None = output
    if isinstance(output, str) and not _is_name(struct, names, output):
        if output in KEYWORDS:
            logits, sel = output == "logits", None
        elif output.startswith("logits:"):
            logits, sel = True, output.partition(":")[2]
            sel = int(sel) if sel.lstrip("-").isdigit() and not _is_name(struct, names, sel) else sel
    if sel is None:
        if not single:
            raise ModelError(f"the model returns {_describe(struct, names)}; choose the one to explain with output=KEY "
                             "or output=INDEX (output='logits:KEY' for the input of its softmax)")
        key = next(iter(struct)) if isinstance(struct, dict) else (0 if isinstance(struct, (list, tuple)) else None)
        tensor = struct[key] if key is not None else struct
        return Selection(tensor, key, logits, "the output")
    if isinstance(sel, int):
        if isinstance(struct, dict) or not isinstance(struct, (list, tuple)) or not -len(struct) <= sel < len(struct):
            raise OptionError(f"output={output!r} selects an element of a list output; the model returns "
                              + (_describe(struct, names) if isinstance(struct, (dict, list, tuple)) else "one tensor"))
        return Selection(struct[sel], sel, logits, f"output {sel}")
    if isinstance(struct, dict):
        if sel not in struct:
            raise OptionError(f"the model has no output {sel!r}; it returns {_describe(struct, names)}")
        return Selection(struct[sel], sel, logits, f"output {sel!r}")
    if isinstance(struct, (list, tuple)) and sel in names:
        i = names.index(sel)
        return Selection(struct[i], i, logits, f"output {sel!r}")
    if not isinstance(struct, (list, tuple)) and sel in names:  # a single output, named
        return Selection(struct, None, logits, f"output {sel!r}")
    raise OptionError(f"the model has no output named {sel!r}; it returns "
                      + (_describe(struct, names) if isinstance(struct, (dict, list, tuple))
                         else f"one output named {names}") + " (or use output='raw' / 'logits')")


def _is_name(struct: Any, names: list[str], s: str) -> bool:
    return (isinstance(struct, dict) and s in struct) or (not isinstance(struct, dict) and s in names)
