"""Targets as other libraries spell them, turned into ours in one place.

:func:`target_groups` accepts, besides the plain targets of :mod:`agnostic_cam.targets`,

- torch / TensorFlow / JAX tensors of class indices, as Captum users pass them
  (``torch.tensor(3)``, ``torch.tensor([3, 5])``);
- pytorch-grad-cam's target lists, ``[ClassifierOutputTarget(3)]``: one object per image, or one for
  every image. The object is a callable on one image's output (K,); known classes are translated
  into framework-neutral scores (so forward-only methods, which score NumPy arrays, run them too):

  ============================== ===================================================
  ``ClassifierOutputTarget(k)``   class index ``k`` (the logit, exactly like ``target=k``)
  ``ClassifierOutputSoftmaxTarget(k)`` ``softmax(output)[k]``
  ``ClassifierOutputReST(k)``     ``output[k] - cross_entropy(output, k)``
  ``BinaryClassifierOutputTarget(c)`` ``output[0]`` for ``c == 1``, ``-output[0]`` otherwise
                                 (a model with one output)
  ============================== ===================================================

  Any other callable in the list is called on each image's output row, as pytorch-grad-cam does.

Images whose targets differ in kind are explained in groups (one call per distinct callable; all
class indices together) and put back in order by the explainer. Extend :data:`TRANSLATORS` to teach
it more target classes (keyed by class name, so the peer library need not be imported).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agnostic_cam.errors import InputError
from agnostic_cam.targets import dispatch as D

Group = tuple[np.ndarray, Any]  # (image indices, a target for those images as TargetSpec takes it)










def softmax_score(k: int) -> Callable[[Any], Any]:
    """``softmax(out)[:, k]`` on NumPy, torch or TensorFlow outputs (M, K)."""
    return lambda out: D.softmax(out)[:, k]


def rest_score(k: int) -> Callable[[Any], Any]:
    """ReST (pytorch-grad-cam's ``ClassifierOutputReST``): ``out[:, k] - CE(out, k) = 2 out_k - logsumexp(out)``."""
    return lambda out: 2 * out[:, k] - D.logsumexp(out)


def binary_score(category: int) -> Callable[[Any], Any]:
    """The single output of a binary classifier, negated for category 0."""
    sign = 1.0 if category == 1 else -1.0

    def score(out):
        if len(out.shape) == 2 and out.shape[1] != 1:
            raise InputError(f"BinaryClassifierOutputTarget explains a model with one output; this one has "
                             f"{out.shape[1]}: use ClassifierOutputTarget(k)")
        return (out[:, 0] if len(out.shape) == 2 else out) * sign

    return score


def per_row(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A pytorch-grad-cam style target (called on one output row (K,)) as a batch target (M, K) -> (M,)."""
    return lambda out: D.stack([fn(out[i]) for i in range(out.shape[0])], out)


def _category(obj: Any) -> int:
    k = getattr(obj, "category", None)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise InputError(f"{type(obj).__name__}.category must be an int class index; got {k!r}")
    return int(k)


# class name -> (key, target): an int key is a class index; any other key names one callable.
TRANSLATORS: dict[str, Callable[[Any], tuple[Any, Any]]] = {
    "ClassifierOutputTarget": lambda o: (_category(o), _category(o)),
    "ClassifierOutputSoftmaxTarget": lambda o: (("softmax", _category(o)), softmax_score(_category(o))),
    "ClassifierOutputReST": lambda o: (("rest", _category(o)), rest_score(_category(o))),
    "BinaryClassifierOutputTarget": lambda o: (("binary", _category(o)), binary_score(_category(o))),
}


def _tensor_value(target: Any) -> Any:
    """A framework tensor (torch, TF, JAX) as a NumPy value; anything else unchanged."""
    if not type(target).__module__.startswith(("torch", "tensorflow", "jax", "jaxlib")) or not hasattr(target, "shape"):
        return target
    arr = D.to_numpy(target)
    return arr.item() if arr.ndim == 0 else arr


def _element(obj: Any) -> tuple[Any, Any]:
    """(key, target) of one list element."""
    obj = _tensor_value(obj)
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, (bool, np.bool_)):
        return int(obj), int(obj)
    tr = TRANSLATORS.get(type(obj).__name__)
    if tr is not None:
        return tr(obj)
    if callable(obj):
        return ("callable", id(obj)), per_row(obj)
    raise InputError(f"a list of targets holds class indices or target objects such as ClassifierOutputTarget(3); "
                     f"got {type(obj).__name__}")


def _is_object_list(target: Any) -> bool:
    """A list holding target objects or tensors (plain numbers are left to TargetSpec's checks)."""
    return isinstance(target, (list, tuple)) and any(
        callable(t) or type(t).__name__ in TRANSLATORS or _tensor_value(t) is not t for t in target)


def target_groups(target: Any, n: int) -> list[Group]:
    """Split ``n`` images by target: ``[(indices, target), ...]`` with each target one that
    :class:`~agnostic_cam.targets.TargetSpec` takes. One group holding every image in the common case."""
    everyone = np.arange(n)
    target = _tensor_value(target)
    if not _is_object_list(target):
        return [(everyone, target)]
    items = list(target)
    if len(items) == 1:
        items = items * n
    if len(items) != n:
        raise InputError(f"{len(target)} targets for {n} images: pass one target per image, or one for all of them")
    elements = [_element(t) for t in items]
    ints = np.array([i for i, (key, _) in enumerate(elements) if isinstance(key, int)], dtype=np.int64)
    groups: list[Group] = []
    if len(ints):
        groups.append((ints, np.array([elements[i][1] for i in ints], dtype=np.int64)))
    seen: dict[Any, list[int]] = {}
    for i, (key, _) in enumerate(elements):
        if not isinstance(key, int):
            seen.setdefault(key, []).append(i)
    groups += [(np.array(idx, dtype=np.int64), elements[idx[0]][1]) for idx in seen.values()]
    return groups


def resolve_alias(target: Any, targets: Any) -> Any:
    """``targets=`` (pytorch-grad-cam's spelling) or ``target=``, not both."""
    if targets is None:
        return target
    if target is not None:
        raise InputError("pass either target= or targets= (the same thing, pytorch-grad-cam's spelling), not both")
    return targets


def is_sequence_of_layers(layer: Any) -> bool:
    """True for a list/tuple of target layers (pytorch-grad-cam's ``target_layers=[...]``)."""
    return isinstance(layer, Sequence) and not isinstance(layer, (str, bytes))
