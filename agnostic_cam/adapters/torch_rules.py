"""Backward rules through every ReLU of a PyTorch forward pass, without touching the model.

``relu_rule(rule)`` is a context manager that installs a :class:`torch.overrides.TorchFunctionMode`
for the forward pass only. Every ReLU call made while it is active - ``nn.ReLU`` (also
``inplace=True``), ``F.relu``, ``F.relu_``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu`` and
``Tensor.relu_`` - is rerouted to a custom ``autograd.Function`` whose forward is the ordinary ReLU
and whose backward applies the rule. Modules, hooks and the model's code stay as they are; once the
block exits, ReLUs called later behave normally (the rule already recorded in a graph stays with
that graph, so ``backward`` may run after the block).

With the upstream gradient ``g`` and the ReLU's output ``y = max(x, 0)`` (``y > 0`` iff ``x > 0``):

- ``vanilla``: ``g * [x > 0]``, the true gradient (no mode is installed at all);
- ``guided`` (Springenberg et al. 2015, eq. in Fig. 1): ``max(g, 0) * [x > 0]``;
- ``deconv`` (Zeiler & Fergus 2014, "rectification" of the reconstruction): ``max(g, 0)``.

Only the ops named above are recognised: activations written as ``torch.clamp(x, min=0)``,
``torch.maximum(x, 0)`` or fused kernels are not ReLU calls and keep their true gradient.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from ..errors import OptionError

RULES = ("vanilla", "guided", "deconv")


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise OptionError(f"unknown backward rule {rule!r}; use one of {', '.join(map(repr, RULES))}")
    return rule


class _RuleReLU(torch.autograd.Function):
    """ReLU whose backward follows ``rule``; ``inplace=True`` modifies the input like ``relu_``."""

    @staticmethod
    def forward(ctx, x, rule: str, inplace: bool):
        if inplace:
            y = x.clamp_(min=0)
            ctx.mark_dirty(x)
        else:
            y = x.clamp(min=0)
        ctx.rule = rule
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.rule == "deconv":
            return g.clamp(min=0), None, None
        if ctx.rule == "guided":
            g = g.clamp(min=0)
        return g * (y > 0).to(g.dtype), None, None


def _relu_ops() -> tuple[set, set]:
    """(out-of-place, in-place) ReLU callables as ``__torch_function__`` sees them."""
    out = {torch.relu, torch.Tensor.relu, torch._C._VariableFunctions.relu}
    inplace = {torch.relu_, torch.Tensor.relu_, torch._C._VariableFunctions.relu_, F.relu_}
    return out, inplace


class ReluRuleMode(TorchFunctionMode):
    """Reroutes ReLU calls to :class:`_RuleReLU` with ``rule``. ``calls`` counts the ReLUs seen."""

    def __init__(self, rule: str):
        super().__init__()
        self.rule = check_rule(rule)
        self.calls = 0
        self._out, self._inplace = _relu_ops()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.relu:
            inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
            return self._apply(args[0] if args else kwargs["input"], bool(inplace))
        if func in self._out:
            return self._apply(args[0] if args else kwargs["input"], False)
        if func in self._inplace:
            return self._apply(args[0] if args else kwargs["input"], True)
        return func(*args, **kwargs)

    def _apply(self, x, inplace: bool):
        self.calls += 1
        return _RuleReLU.apply(x, self.rule, inplace)


@contextlib.contextmanager
def relu_rule(rule: str = "vanilla"):
    """Apply backward ``rule`` ('vanilla', 'guided', 'deconv') to every ReLU called in the block.

    Yields the active :class:`ReluRuleMode` (``mode.calls`` counts the ReLUs rerouted), or None
    for 'vanilla', which leaves PyTorch's own ReLU (and its exact gradient) in place.
    """
    if check_rule(rule) == "vanilla":
        yield None
        return
    mode = ReluRuleMode(rule)
    with mode:
        yield mode
