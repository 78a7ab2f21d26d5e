"""The array operations targets need, on NumPy arrays, torch tensors and TensorFlow tensors alike.

A target maps a model output to one score per row. Forward-only methods call it with NumPy arrays,
gradient methods with the framework's tensors, so each operation dispatches on the library of its
argument. No framework is imported here: a tensor's library is already in ``sys.modules``.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def kind(t: Any) -> str:
    """'torch', 'tf' or 'numpy': which library's tensor ``t`` is."""
    mod = type(t).__module__
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith(("tensorflow", "tf_keras", "keras")):
        return "tf"
    return "numpy"


def to_numpy(a: Any) -> np.ndarray:
    """np.ndarray from a NumPy array, torch tensor (detached, on the CPU), TF tensor or nested list."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if hasattr(a, "numpy"):
        return np.asarray(a.numpy())
    return np.asarray(a)


def as_like(a: np.ndarray, like: Any) -> Any:
    """NumPy constant ``a`` as a tensor of ``like``'s library (device and float dtype of ``like``)."""
    k = kind(like)
    if k == "torch":
        return sys.modules["torch"].as_tensor(a, dtype=like.dtype, device=like.device)
    if k == "tf":
        return sys.modules["tensorflow"].constant(a, dtype=like.dtype)
    return np.asarray(a, dtype=np.float64)


def sum_axes(t: Any, axes: tuple[int, ...]) -> Any:
    k = kind(t)
    if k == "torch":
        return t.sum(dim=axes)
    if k == "tf":
        return sys.modules["tensorflow"].reduce_sum(t, axis=axes)
    return np.sum(t, axis=axes)


def stack(values: list, like: Any) -> Any:
    """Scalars ``values`` as one (M,) tensor of ``like``'s library."""
    k = kind(like)
    if k == "torch":
        return sys.modules["torch"].stack([v.reshape(()) for v in values])
    if k == "tf":
        tf = sys.modules["tensorflow"]
        return tf.stack([tf.reshape(v, []) for v in values])
    return np.array([np.asarray(v, dtype=np.float64).reshape(()) for v in values])


def argmax(t: Any) -> int:
    k = kind(t)
    if k == "torch":
        return int(t.detach().argmax())
    return int(np.argmax(t.numpy() if k == "tf" else t))


def transpose(t: Any) -> Any:
    """(N, a, b) -> (N, b, a)."""
    k = kind(t)
    if k == "torch":
        return t.transpose(1, 2)
    if k == "tf":
        return sys.modules["tensorflow"].transpose(t, [0, 2, 1])
    return np.swapaxes(t, 1, 2)


def softmax(out: Any) -> Any:
    """Softmax over the last axis."""
    k = kind(out)
    if k == "torch":
        return sys.modules["torch"].softmax(out, dim=-1)
    if k == "tf":
        return sys.modules["tensorflow"].nn.softmax(out, axis=-1)
    a = np.asarray(out, dtype=np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def logsumexp(out: Any) -> Any:
    """log-sum-exp over the last axis."""
    k = kind(out)
    if k == "torch":
        return sys.modules["torch"].logsumexp(out, dim=-1)
    if k == "tf":
        return sys.modules["tensorflow"].reduce_logsumexp(out, axis=-1)
    a = np.asarray(out, dtype=np.float64)
    m = a.max(axis=-1)
    return m + np.log(np.exp(a - m[:, None]).sum(axis=-1))
