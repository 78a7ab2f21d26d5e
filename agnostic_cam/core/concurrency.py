"""The locks behind the thread-safety contract (README, "Guarantees").

- :func:`model_lock`: one re-entrant lock per user model object. Every block that changes the
  model's state for a moment (eval mode, ``requires_grad`` flags, hooks) holds it, so two threads
  (or two explainers of one model) never interleave their save/restore and the model always ends
  as it started. Framework-side passes over one model therefore run one at a time; ONNX Runtime
  runs (forward-only methods) do not take it and run concurrently.
- :data:`EXPORT_LOCK`: ONNX exporters keep process-wide state (``torch.onnx`` asserts it is not
  re-entered, tf2onnx shares a graph context), so every export in the process runs under it.
- Lock order, to stay free of deadlocks: an adapter's cache lock, then the export lock, then a
  model lock. Code holding a model lock never takes the other two.
- :func:`once`: double-checked creation of a cached value under a lock (sessions, engines).
"""
from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXPORT_LOCK = threading.RLock()
_REGISTRY_LOCK = threading.Lock()
_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PINNED: dict[int, tuple[object, threading.RLock]] = {}  # models that cannot be weakly referenced


def model_lock(model: object) -> threading.RLock:
    """The process-wide re-entrant lock of ``model`` (created on first use, dropped with the model)."""
    with _REGISTRY_LOCK:
        try:
            lock = _MODEL_LOCKS.get(model)
            if lock is None:
                lock = _MODEL_LOCKS[model] = threading.RLock()
            return lock
        except TypeError:  # not weak-referenceable: keep it (and its lock) for the process
            entry = _PINNED.get(id(model))
            if entry is None or entry[0] is not model:
                entry = _PINNED[id(model)] = (model, threading.RLock())
            return entry[1]


def once(lock: threading.RLock | threading.Lock, get: Callable[[], T | None], make: Callable[[], T]) -> T:
    """``get()`` if it is not None, else ``make()`` under ``lock`` (checked again inside it), so a
    value shared by threads is created exactly once."""
    value = get()
    if value is not None:
        return value
    with lock:
        value = get()
        return make() if value is None else value




def serialised(method: Callable[..., T]) -> Callable[..., T]:
    """Decorator for adapter methods that touch ``self.model``: the whole call holds the model's lock
    (hooks registered, forward and backward run, hooks removed, all before another thread's turn)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with model_lock(self.model):
            return method(self, *args, **kwargs)
    return wrapper


__all__ = ["EXPORT_LOCK", "model_lock", "once", "serialised"]
