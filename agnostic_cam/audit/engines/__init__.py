"""Audit engines: they only decide where and how many images run at once.

An engine is a function ``(ctx, items, workers=..., **options) -> iterator of Result`` that yields
one :class:`~agnostic_cam.audit.record.Result` per item (any order), each made by
:func:`agnostic_cam.audit.record.compute_records`. Resume, report and metrics know nothing about
engines.
"""
from __future__ import annotations

import contextlib

ENGINES = ("local", "ray")


def blas_one_thread():
    """A context that keeps NumPy's BLAS (OpenBLAS / MKL) to one thread while images are computed.

    The audit's BLAS work is small matrices (Eigen-CAM's SVD of an (h*w, C) matrix per image,
    the CAM weighted sums) between ONNX Runtime calls that already use every core; on two
    threads OpenBLAS spins against ONNX Runtime's threads (measured on the benchmark machine, a
    49 x 512 SVD: 2 ms of CPU on one thread, 120 ms on two). Results are the same. A no-op
    without threadpoolctl (installed with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def get_engine(name: str):
    """The engine function called ``name`` ('local' or 'ray')."""
    if name == "local":
        from agnostic_cam.audit.engines.local import run_local

        return run_local
    if name == "ray":
        from agnostic_cam.audit.engines.ray import run_ray

        return run_ray
    from agnostic_cam.errors import OptionError

    raise OptionError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
