"""Checks on the numbers that flow through one explanation, and on the tail graph.

Non-finite values are caught where they enter (README, "Guarantees"): the model's outputs, the
target scores (a callable target may return NaN), the layer's activations and gradients, the
outputs of every extra forward pass a method runs (Score-CAM's masked images, Ablation-CAM's
tail), and the raw map a method returns. Each raises :class:`NonFiniteError` whose ``where``
names the place, never a map built from NaN (which min-max scaling would turn into zeros).

:func:`verify_tail` proves that a graph cut after the target layer is the model's own tail.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agnostic_cam.errors import ModelError, NonFiniteError

HINTS = {
    "model output": "the model produced NaN/Inf: check its weights (NaN after training?) and the input scale",
    "target score": "the target callable returned NaN/Inf for some image; make it return finite scores",
    "layer activation": "the target layer's activation holds NaN/Inf: check the model's weights and the input",
    "layer gradient": "the gradient at the target layer is NaN/Inf (an op with an infinite derivative?)",
    "input gradient": "the gradient with respect to the input is NaN/Inf (an op with an infinite derivative?)",
}


def check_finite(a, where: str, hint: str | None = None) -> None:
    """Raise NonFiniteError naming ``where`` if ``a`` holds NaN or Inf (None passes)."""
    if a is None:
        return
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.number) or np.isfinite(arr).all():
        return
    bad = int((~np.isfinite(arr)).sum())
    rows = np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)) if arr.ndim else np.array([])
    imgs = f" (image(s) {rows[:8].tolist()}{'...' if len(rows) > 8 else ''})" if rows.size else ""
    raise NonFiniteError(f"{bad} NaN/Inf value(s) in the {where}{imgs}: {hint or HINTS.get(where, 'see the input')}",
                         where=where)


def checked_capture(cap) -> None:
    """Check a fresh capture's arrays; wrap its forward/tail callables so their outputs are checked."""
    check_finite(cap.outputs, "model output")
    check_finite(cap.scores, "target score")
    check_finite(cap.activations, "layer activation")
    check_finite(cap.grads, "layer gradient")
    check_finite(getattr(cap, "input_grads", None), "input gradient")
    for name, where in (("forward", "model output on a perturbed input"), ("tail", "model output after the layer")):
        fn = getattr(cap, name, None)
        if fn is not None:
            setattr(cap, name, _checked(fn, where))
    if getattr(cap, "input_grad", None) is not None:
        cap.input_grad = _checked(cap.input_grad, "input gradient")


def _checked(fn: Callable, where: str) -> Callable:
    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        check_finite(out, where, HINTS["model output"] if "output" in where else None)
        return out
    run.__wrapped__ = fn
    return run


def verify_tail(run: Callable, cap, layer: str, reads_layer: bool | None) -> None:
    """Prove the tail graph (activation -> output) is the model's: it must READ the activation
    (graph dependency, and the output moves when the activation does) and reproduce the outputs.

    A tapped tensor on a side branch that the output never reads would otherwise pass an
    outputs-only comparison and give all-zero Ablation-CAM weights. Raises ModelError.

    ``reads_layer``: whether the tail's graph computes the output from the layer's tensor (the
    engine's answer), or None for a tail with no graph (the eager forward fallback's engine): then
    only the numeric checks run. A model whose output does not move when
    its INPUT moves either (e.g. a head with zero weights) is not refused: its maps are constant
    and flagged as degenerate (agnostic_cam/core/degenerate.py).
    """
    fix = "use a method that does not re-run the tail ('scorecam', 'gradcam') or a layer on the main path"
    if reads_layer is False:
        raise ModelError(f"the model's output does not read layer {layer!r} (a side branch, or a tensor the output "
                         f"is computed around): its tail cannot be re-run from it; {fix}")
    acts = cap.activations if getattr(cap, "native", None) is None else cap.native  # what the tail starts from
    got = run(acts, np.arange(cap.n))
    ref = np.asarray(cap.outputs)
    tol = 1e-3 * (np.abs(ref).max() + 1e-6)
    if got.shape != ref.shape or np.abs(got - ref).max() > tol:
        raise ModelError(f"the graph after layer {layer!r} could not be separated from the rest of the model (its "
                         f"outputs do not reproduce the model's); {fix}")
    a = acts[:1]
    moved = run(a * 2 + (np.abs(a).mean() + 1), np.zeros(1, np.int64))
    if np.array_equal(moved, got[:1]) and not _ignores_input(cap):
        raise ModelError(f"the model's output does not change when layer {layer!r} changes: the output does not "
                         f"read it; {fix}")


def check_layer_map(acts, layer: str | None, input_size) -> None:
    """One rule for every method that reads the target layer (issue 29): a map of one position
    (h * w == 1) has nothing spatial to explain. Grad-CAM's adapters refused it while Eigen-CAM
    returned a flagged 1x1 map; now every layer method refuses it the same way."""
    if acts is None or np.ndim(acts) not in (4, 5) or int(np.prod(acts.shape[2:])) > 1:
        return
    raise ModelError(f"layer {layer!r} gives a {'x'.join(str(d) for d in acts.shape[2:])} map for {tuple(input_size)} input "
                     "images: one position has no spatial extent to explain. Use larger input images or an "
                     "earlier layer")


def _ignores_input(cap) -> bool:
    """Whether the whole model's output stays the same when image 0 is perturbed (a constant model)."""
    forward = getattr(cap, "forward", None)
    if forward is None:
        return False
    x0 = np.asarray(cap.x[:1], np.float32)
    out = forward(x0 * 2 + (np.abs(x0).mean() + 1))
    return np.array_equal(np.asarray(out), np.asarray(cap.outputs)[:1])


__all__ = ["check_finite", "check_layer_map", "checked_capture", "verify_tail"]
