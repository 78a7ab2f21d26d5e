"""NumPy's BLAS kept to one thread while ONNX Runtime runs on the CPU.

Forward-only methods alternate ONNX Runtime calls, which use every core, with small NumPy
products between them (RISE's mask sums, Eigen-CAM's SVD of an (h*w, C) matrix, the curves'
scores). OpenBLAS keeps its worker threads spinning for a while after each product, so on a
machine with few cores they take the cores away from the next ONNX Runtime call. Measured on
2 cores (ResNet-18, 224 px, RISE with 500 masks): 13.9 ms per masked image with BLAS on two
threads, 11.3 ms on one, against 10.9 ms for ONNX Runtime alone; a 49 x 512 SVD: 2 ms of CPU on
one thread, 120 ms on two. Results are the same (the products are small).

The limit is process-wide while it is held (threadpoolctl has no per-thread limit) and is lifted
when the explain call or audit ends, also on an exception.

Finding the loaded BLAS libraries (threadpoolctl walks every shared object of the process) took
about 5 ms per explain call; the controller is kept and found again only when a module was
imported since (a new extension module may have loaded another BLAS).
"""
from __future__ import annotations

import contextlib
import threading


_lock = threading.Lock()
_holders = 0
_limiter = None
_controller: list = [None, -1]  # (threadpoolctl.ThreadpoolController, len(sys.modules) when it was made)


def _blas_controller():
    """threadpoolctl's controller of the loaded libraries, made again when modules were imported since."""
    import sys

    from threadpoolctl import ThreadpoolController

    if _controller[0] is None or _controller[1] != len(sys.modules):
        _controller[:] = [ThreadpoolController(), len(sys.modules)]
    return _controller[0]


@contextlib.contextmanager
def blas_one_thread():
    """A context that keeps NumPy's / SciPy's BLAS (OpenBLAS, MKL, BLIS) to one thread.

    Reference-counted across threads: the first caller sets the limit, the last one to leave puts
    the previous thread counts back (two threads explaining at once never leave the process at one
    BLAS thread). A no-op when threadpoolctl is missing (a dependency of agnostic-cam, also
    installed with scikit-learn)."""
    global _holders, _limiter
    with _lock:
        if _holders == 0:
            try:
                controller = _blas_controller()
            except ImportError:
                _limiter = None
            else:
                _limiter = controller.limit(limits=1, user_api="blas")
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


def on_cpu(providers) -> bool:
    """Whether ONNX Runtime will run on the CPU for an adapter with ``providers`` (None: the default,
    CUDA when this onnxruntime build has it)."""
    if providers:
        return str(providers[0] if not isinstance(providers[0], tuple) else providers[0][0]) == "CPUExecutionProvider"
    from agnostic_cam.engine.session import default_providers
    from agnostic_cam.errors import MissingDependencyError

    try:
        return default_providers()[0] == "CPUExecutionProvider"
    except MissingDependencyError:  # no onnxruntime: the adapter says so when it needs it
        return False
