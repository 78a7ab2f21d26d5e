"""Backward rules through every ReLU of a PyTorch forward pass, without touching the model.

``relu_rule(rule)`` is a context manager that installs a :class:`torch.overrides.TorchFunctionMode`
for the forward pass only. Every ReLU-family call made while it is active is rerouted to a custom
``autograd.Function`` whose forward is the ordinary op and whose backward applies the rule.
Modules, hooks and the model's code stay as they are; once the block exits, calls behave normally
(the rule already recorded in a graph stays with that graph, so ``backward`` may run after it).

ReLU-family (:mod:`agnostic_cam.core.relu_policy` states the rule for every framework): ``max(x, 0)``,
optionally capped above, i.e. ``nn.ReLU`` (also ``inplace=True``), ``F.relu(_)``, ``torch.relu(_)``,
``Tensor.relu(_)``, ``nn.ReLU6`` / ``F.relu6``, ``F.hardtanh(x, 0, m)`` and ``torch.clamp`` /
``clip`` / ``clamp_min`` (also in place) with lower bound the number 0 and an upper bound > 0 or none.

With the upstream gradient ``g`` and the op's output ``y`` (``0 < y < m`` iff the true local
gradient is 1; ``m`` the cap or infinity):

- ``vanilla``: the true gradient (no mode is installed at all);
- ``guided`` (Springenberg et al. 2015, eq. in Fig. 1): ``max(g, 0) * [0 < y < m]``;
- ``deconv`` (Zeiler & Fergus 2014, "rectification" of the reconstruction): ``max(g, 0)``.

:class:`ActivationCounter` only records which activations a forward pass calls (ReLU-family or
others such as SiLU, GELU, Hardswish, sigmoid), for the policy on models that mix them.
"""
from __future__ import annotations

import contextlib
import numbers
from functools import cache

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from agnostic_cam.core.relu_policy import RULES, Census, check_rule

__all__ = ["RULES", "ActivationCounter", "ReluRuleMode", "check_rule", "classify", "relu_rule"]


class _RuleReLU(torch.autograd.Function):
    """ReLU (capped at ``cap`` when not None) whose backward follows ``rule``; ``inplace=True``
    modifies the input like ``relu_``."""

    @staticmethod
    def forward(ctx, x, rule: str, inplace: bool, cap):
        if inplace:
            y = x.clamp_(min=0, max=cap)
            ctx.mark_dirty(x)
        else:
            y = x.clamp(min=0, max=cap)
        ctx.rule, ctx.cap = rule, cap
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.rule == "deconv":
            return g.clamp(min=0), None, None, None
        if ctx.rule == "guided":
            g = g.clamp(min=0)
        live = y > 0 if ctx.cap is None else (y > 0) & (y < ctx.cap)
        return g * live.to(g.dtype), None, None, None


@cache
def _tables() -> tuple[set, set, dict]:
    """(out-of-place ReLU ops, in-place ReLU ops, other activation op -> label) as
    ``__torch_function__`` sees them."""
    from agnostic_cam import compat

    relu_out, relu_in = compat.torch_relu_functions()
    v = compat.private("torch", "_C._VariableFunctions")
    others = {F.silu: "SiLU", F.gelu: "GELU", F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid",
              F.elu: "ELU", F.elu_: "ELU", F.selu: "SELU", F.selu_: "SELU", F.celu: "CELU", F.celu_: "CELU",
              F.leaky_relu: "LeakyReLU", F.leaky_relu_: "LeakyReLU", F.prelu: "PReLU", F.rrelu: "RReLU",
              F.rrelu_: "RReLU", F.mish: "Mish", F.softplus: "Softplus", F.softsign: "Softsign",
              F.logsigmoid: "LogSigmoid", F.tanhshrink: "Tanhshrink", F.glu: "GLU", F.sigmoid: "Sigmoid",
              F.tanh: "Tanh", torch.sigmoid: "Sigmoid", torch.sigmoid_: "Sigmoid", torch.Tensor.sigmoid: "Sigmoid",
              torch.Tensor.sigmoid_: "Sigmoid", torch.tanh: "Tanh", torch.tanh_: "Tanh", torch.Tensor.tanh: "Tanh",
              torch.Tensor.tanh_: "Tanh", v.sigmoid: "Sigmoid", v.tanh: "Tanh"}
    return relu_out, relu_in, others


_CLAMP_OUT = {torch.clamp, torch.clip, torch.Tensor.clamp, torch.Tensor.clip}
_CLAMP_IN = {torch.clamp_, torch.clip_, torch.Tensor.clamp_, torch.Tensor.clip_}
_CLAMP_MIN = {torch.clamp_min: False, torch.Tensor.clamp_min: False, torch.clamp_min_: True,
              torch.Tensor.clamp_min_: True}


def _arg(args, kwargs, i: int, name: str, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _cap(lo, hi):
    """(is ReLU-family, cap) for bounds [lo, hi]: lo the number 0 and hi > 0 or None."""
    if _num(lo) and lo == 0 and (hi is None or (_num(hi) and hi > 0)):
        return True, (None if hi is None else float(hi))
    return False, None


def classify(func, args, kwargs) -> tuple | None:
    """("relu", label, inplace, cap) for a ReLU-family call, ("other", label) for another
    element-wise activation, None for anything else (clamps with other bounds are not counted)."""
    relu_out, relu_in, others = _tables()
    if func is F.relu:
        return "relu", "ReLU", bool(_arg(args, kwargs, 1, "inplace", False)), None
    if func in relu_out or func in relu_in:
        return "relu", "ReLU", func in relu_in, None
    if func is F.relu6:
        return "relu", "ReLU6", bool(_arg(args, kwargs, 1, "inplace", False)), 6.0
    if func in (F.hardtanh, F.hardtanh_):
        lo, hi = _arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)
        ok, cap = _cap(lo, hi)
        inplace = func is F.hardtanh_ or bool(_arg(args, kwargs, 3, "inplace", False))
        return ("relu", "ReLU6" if cap == 6 else f"Hardtanh(0, {hi:g})", inplace, cap) if ok else ("other", "Hardtanh")
    if func in _CLAMP_OUT or func in _CLAMP_IN:
        ok, cap = _cap(_arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max"))
        return ("relu", "clamp(0)" if cap is None else f"clamp(0, {cap:g})", func in _CLAMP_IN, cap) if ok else None
    if func in _CLAMP_MIN:
        ok, _ = _cap(_arg(args, kwargs, 1, "min"), None)
        return ("relu", "clamp(0)", _CLAMP_MIN[func], None) if ok else None
    label = others.get(func)
    return None if label is None else ("other", label)


class ReluRuleMode(TorchFunctionMode):
    """Reroutes ReLU-family calls to :class:`_RuleReLU` with ``rule``. ``calls`` counts them."""

    def __init__(self, rule: str):
        super().__init__()
        self.rule = check_rule(rule)
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        c = classify(func, args, kwargs)
        if c is None or c[0] != "relu":
            return func(*args, **kwargs)
        self.calls += 1
        return _RuleReLU.apply(args[0] if args else kwargs["input"], self.rule, c[2], c[3])


class ActivationCounter(TorchFunctionMode):
    """Records the activations a forward pass calls; :meth:`census` tells them apart."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, str, object]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        c = classify(func, args, kwargs)
        if c is not None:
            self.calls.append((c[0], c[1], out))
        return out

    def census(self, output) -> Census:
        """The calls, without an activation that produced ``output`` itself (a sigmoid head)."""
        calls = self.calls[:-1] if self.calls and self.calls[-1][2] is output else self.calls
        return Census(tuple(lb for k, lb, _ in calls if k == "relu"), tuple(lb for k, lb, _ in calls if k != "relu"))


@contextlib.contextmanager
def relu_rule(rule: str = "vanilla"):
    """Apply backward ``rule`` ('vanilla', 'guided', 'deconv') to every ReLU-family call in the block.

    Yields the active :class:`ReluRuleMode` (``mode.calls`` counts the calls rerouted), or None
    for 'vanilla', which leaves PyTorch's own ops (and their exact gradient) in place.
    """
    if check_rule(rule) == "vanilla":
        yield None
        return
    mode = ReluRuleMode(rule)
    with mode:
        yield mode


_MODULES = {"ReLU": "relu", "ReLU6": "relu", "SiLU": "other", "GELU": "other", "Hardswish": "other",
            "Hardsigmoid": "other", "ELU": "other", "SELU": "other", "CELU": "other", "LeakyReLU": "other",
            "PReLU": "other", "RReLU": "other", "Mish": "other", "Softplus": "other", "Softsign": "other",
            "Sigmoid": "other", "Tanh": "other", "LogSigmoid": "other", "Tanhshrink": "other", "GLU": "other"}


def module_census(model: torch.nn.Module) -> Census:
    """Activation *modules* only (no forward pass: functional calls are not seen, ``exact=False``)."""
    relus, others = [], []
    for m in model.modules():
        kind = _MODULES.get(type(m).__name__)
        if isinstance(m, torch.nn.Hardtanh) and not isinstance(m, torch.nn.ReLU6):
            ok, _ = _cap(m.min_val, m.max_val)
            kind = "relu" if ok else "other"
        if kind:
            (relus if kind == "relu" else others).append(type(m).__name__)
    return Census(tuple(relus), tuple(others), exact=False)


def traced_census(run_forward) -> Census:
    """The census of one forward pass: ``run_forward()`` returns the model's output."""
    counter = ActivationCounter()
    with counter:
        out = run_forward()
    return counter.census(out)
