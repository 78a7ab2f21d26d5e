"""Derivatives beyond one gradient, for PyTorch graphs: the user's module (``from_torch``) and the
ONNX gradient backend's converted module (``from_onnx``) share this code.

- Hessian-vector product at the target layer, ``H A = d/dA <dS/dA, A>`` (ShapleyCAM): a double
  backward, the first ``autograd.grad`` with ``create_graph=True``.
- Bias gradients (FullGrad, Srinivas & Fleuret 2019): for every ``Conv2d`` and ``BatchNorm2d`` with
  a bias, in call order, its bias vector (BatchNorm: the effective bias
  ``beta - mean * gamma / sqrt(var + eps)``) and d(score)/d(the module's output); a module called
  twice gives two terms (as in the Keras adapter); plus d(score)/d(input).
Parameters are never differentiated and the model's flags are restored by the callers' contexts.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from agnostic_cam.adapters.base import Higher
from agnostic_cam.errors import BackendError
from agnostic_cam.targets import TargetSpec


def bias_layers(root: nn.Module) -> list[nn.Module]:
    """``Conv2d`` and ``BatchNorm2d`` modules with a bias, in module order (as pytorch-grad-cam's FullGrad)."""
    return [m for m in root.modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None]


def effective_bias(m: nn.Module) -> np.ndarray:
    if isinstance(m, nn.BatchNorm2d):
        b = m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
    else:
        b = m.bias
    return b.detach().cpu().float().numpy()


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def higher_derivatives(run: Callable, root: nn.Module, xt: torch.Tensor, target: TargetSpec, scores_fn,
                       hvp: bool = False, bias: bool = False) -> Higher:
    """One forward ``run(xt) -> (output, activation or None)`` of ``root``'s graph, then what is asked.

    xt: the input batch (requires grad when ``bias``); target: for these rows.
    """
    layers = bias_layers(root) if bias else []
    store: list[tuple[nn.Module, torch.Tensor]] = []  # every call of a bias layer (a shared one: each call)

    def keep(mod, inputs, o):
        store.append((mod, o))
        return o.clone()  # a later in-place op (ReLU(inplace=True)) must not rebase what we differentiate

    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        out, act = run(xt)
    finally:
        for h in handles:
            h.remove()
    out_np = _np(out)
    classes = target.indices(out_np)
    s = scores_fn(out, classes, target)
    res = Higher(out_np, _np(s).astype(np.float64), classes)
    if hvp:
        (g,) = torch.autograd.grad(s.sum(), act, create_graph=True)
        try:
            h = torch.autograd.grad(g, act, grad_outputs=act.detach(), allow_unused=True)[0] if g.requires_grad else None
        except RuntimeError as e:
            if "derivative for" not in str(e):
                raise
            raise BackendError(f"the Hessian-vector product needs second derivatives of every operation after the "
                               f"target layer, and PyTorch lacks one here ({e}); pick a later target layer") from None
        res.activations, res.grads = _np(act), _np(g)
        res.hvp = np.zeros_like(res.grads) if h is None else _np(h)
    if bias:
        grads = torch.autograd.grad(s.sum(), [xt, *(o for _, o in store)], allow_unused=True)
        res.input_grads = np.zeros(tuple(xt.shape), np.float32) if grads[0] is None else _np(grads[0])
        res.bias_terms = [(effective_bias(m), np.zeros(tuple(o.shape), np.float32) if g is None else _np(g))
                          for (m, o), g in zip(store, grads[1:])]
    return res


class TorchHigherOrder:
    """``Adapter.higher_derivatives`` for a TorchAdapter (which provides ``model``, ``layer``,
    ``_forward``, ``_tensor``, ``_guard`` and ``_scores``)."""

    def higher_derivatives(self, x: np.ndarray, target: TargetSpec, hvp: bool = False, bias: bool = False) -> Higher:
        from agnostic_cam.adapters.pytorch.primitives import hooked, preserved

        self._guard()
        store: list = []

        def keep(module, inputs, out):
            store.append(out)
            return out.clone()

        def run(xt):
            if not hvp:
                return self._forward(xt), None
            with hooked(self.layer, keep):
                out = self._forward(xt)
            return out, store[-1]

        with preserved(self.model), torch.enable_grad():
            for p in self.model.parameters():
                p.requires_grad_(False)
            return higher_derivatives(run, self.model, self._tensor(x, requires_grad=True), target, self._scores,
                                      hvp, bias)


def _rows(h: Higher, m: int) -> Higher:
    """The first ``m`` rows of every per-row array (drops a fixed-batch graph's padding rows;
    rows are independent, so padding never changes the real rows' derivatives)."""
    cut = lambda a: None if a is None else a[:m]  # noqa: E731
    return Higher(cut(h.outputs), cut(h.scores), cut(h.classes), cut(h.activations), cut(h.grads),
                  cut(h.input_grads), cut(h.hvp), [(b, g[:m]) for b, g in h.bias_terms])


def backend_higher_derivatives(backend, x: np.ndarray, target: TargetSpec, hvp: bool, bias: bool) -> Higher:
    """``higher_derivatives`` through the ONNX gradient backend's converted module, chunk by chunk
    in the graph's fixed batch size when it has one."""
    parts, lo = [], 0
    with torch.enable_grad():
        for m, chunk in backend._chunks(x):
            k = chunk.shape[0]
            fixed = None if target.fixed is None else target.fixed[lo:lo + m]
            if fixed is not None and k > m:
                fixed = np.concatenate([fixed, np.repeat(fixed[-1:], k - m)])
            sub = TargetSpec(target.fn if target.fn is not None else fixed, k)
            xt = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).requires_grad_(True)
            parts.append(_rows(higher_derivatives(backend._run, backend.module, xt, sub, backend._scores, hvp, bias), m))
            lo += m
    if len(parts) == 1:
        return parts[0]
    cat = lambda k: None if getattr(parts[0], k) is None else np.concatenate([getattr(p, k) for p in parts])  # noqa: E731
    terms = [(parts[0].bias_terms[j][0], np.concatenate([p.bias_terms[j][1] for p in parts]))
             for j in range(len(parts[0].bias_terms))]
    return Higher(cat("outputs"), cat("scores"), cat("classes"), cat("activations"), cat("grads"),
                  cat("input_grads"), cat("hvp"), terms)
