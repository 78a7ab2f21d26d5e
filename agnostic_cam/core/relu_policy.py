"""Backward rules (guided, deconv) and the model's activations: one policy for every framework.

Guided backpropagation and deconvnet change how gradients pass through ReLUs. On a model whose
other activations (SiLU, GELU, Hardswish, sigmoid gates...) keep their true gradient, the result is
only *partly* guided: timm ``mobilevitv2_050`` has 25 SiLU and 9 ReLU calls, and its "guided" map
correlates 0.53 with the plain gradient. So:

- **ReLU-family** (the ops a rule applies to, in PyTorch, Keras and ONNX alike): ``max(x, 0)``,
  optionally capped above. PyTorch: ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` (and
  in-place forms), ``nn.ReLU6`` / ``F.relu6``, ``Hardtanh(0, m)``, ``torch.clamp`` / ``clip`` /
  ``clamp_min`` with lower bound the number 0 and upper bound > 0 or none. Keras: ``layers.ReLU``
  with ``negative_slope=0`` and ``threshold=0`` (any ``max_value``), ``Activation("relu")`` /
  ``"relu6"``, ``activation="relu"`` / ``"relu6"`` fused into a layer, ``keras.ops.relu`` /
  ``relu6``. ONNX: ``Relu`` and ``Clip`` with min 0 and max > 0 or absent (how ReLU6 is exported).
  Under a rule, with ``m`` the cap (or infinity): guided ``max(g, 0) * [0 < x < m]``, deconv
  ``max(g, 0)``.
- **Other activations** (counted): every other element-wise non-linearity (SiLU/swish, GELU,
  Hardswish, Hardsigmoid, sigmoid, tanh, ELU, SELU, LeakyReLU, PReLU, Mish, Softplus, Hardtanh with
  other bounds, ONNX ``Erf`` of an exported GELU...). Not counted: softmax, and an activation that
  produces the model's output itself (a sigmoid or softmax head). A clamp with one bound other
  than 0 (``clamp(min=1e-6)``) is not an activation.
- **Policy**: a method with a rule (``guided_backprop``, ``deconvnet``, the guided CAMs, SmoothGrad
  over them, ``deconv_reconstruction``) runs when every counted activation is ReLU-family; is refused
  (:class:`~agnostic_cam.errors.ModelError`) when none is; and when only some are, is refused with
  a message that counts them unless the caller passes ``partial_rules=True``. ``Explainer.methods``
  lists rule methods only where they would run by default (``ex.partial_rules = True`` lists them for
  partly-ReLU models too).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from agnostic_cam.errors import ModelError, OptionError

RULES = ("vanilla", "guided", "deconv")


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise OptionError(f"unknown backward rule {rule!r}; use one of {', '.join(map(repr, RULES))}")
    return rule


def _tally(labels: tuple[str, ...]) -> str:
    return ", ".join(f"{n} {lb}" for lb, n in Counter(labels).most_common())


@dataclass(frozen=True)
class Census:
    """The model's counted activations by label (one entry per call / layer / node).

    exact: False when read from activation modules only (PyTorch without a known input shape:
    functional calls such as ``F.relu`` are not seen until a forward pass runs).
    """

    relus: tuple[str, ...] = ()
    others: tuple[str, ...] = ()
    exact: bool = True

    @property
    def total(self) -> int:
        return len(self.relus) + len(self.others)

    def summary(self) -> str:
        """E.g. '9 of 34 activations are ReLUs (9 ReLU); the other 25: 25 SiLU'."""
        s = f"{len(self.relus)} of {self.total} activations are ReLUs"
        if self.relus:
            s += f" ({_tally(self.relus)})"
        return s + (f"; the other {len(self.others)}: {_tally(self.others)}" if self.others else "")

    def allows(self, rule: str, partial: bool = False) -> bool:
        """Whether a method with backward ``rule`` runs on this model under the policy."""
        if rule == "vanilla":
            return True
        return bool(self.relus) and (partial or not self.others)


def refusal(census: Census, rule: str, what: str, partial: bool) -> str | None:
    """None when ``what`` (a method name) may run with ``rule``; else the message of the refusal."""
    if census.allows(rule, partial):
        return None
    if not census.relus:
        return (f"{what} applies the {rule!r} backward rule to ReLUs, but this model has none ({census.summary()}): "
                "the map would be the plain gradient. Use a method without a ReLU rule, e.g. 'saliency' or "
                "'integrated_gradients'")
    return (f"{what} applies the {rule!r} backward rule to ReLUs, but only {census.summary()}: those keep "
            f"their true gradient, so the map would be only partly {rule}. Pass partial_rules=True to run it "
            "anyway (e.g. explain(x, method, partial_rules=True)), or use a method without a ReLU rule, such "
            "as 'saliency' or 'integrated_gradients'")


def check(census: Census | None, rule: str, what: str, partial: bool = False) -> None:
    """Raise :class:`ModelError` when the policy refuses ``what`` with ``rule`` (None: unknown census)."""
    msg = None if census is None else refusal(census, rule, what, partial)
    if msg:
        raise ModelError(msg)


def method_rule(cls) -> str:
    """The backward rule a method class uses by default ('vanilla' for most)."""
    return getattr(cls, "rule", "vanilla") or "vanilla"


def listed(adapter, rule: str, partial: bool = False) -> bool:
    """Whether ``Explainer.methods`` lists a method with ``rule`` for ``adapter``: yes unless the census
    (without running the model when no input shape is known) says the policy would refuse it."""
    if rule == "vanilla":
        return True
    census = adapter.activation_census()
    if census is None or (not census.exact and census.total == 0):
        return True  # unknown until a forward pass runs; explain() decides
    return census.allows(rule, partial)


def enforce(adapter, rule: str, what: str, sample_shape: tuple, partial: bool = False) -> None:
    """Before a method with ``rule`` runs on inputs of ``sample_shape``: raise when the policy refuses it.
    A model with no counted activation at all is left to the adapter's own error."""
    if rule == "vanilla":
        return
    census = adapter.activation_census(tuple(sample_shape))
    if census is not None and census.total:
        check(census, rule, what, partial)
