"""When the ONNX export of a model fails, forward-only methods run on the framework itself.

Some models cannot be exported at some input sizes (torchvision VGG below 224 px: the head's
``AdaptiveAvgPool2d(7)`` on a smaller map is not exportable; the legacy exporter then raises
``SymbolicValueError`` after printing the whole TorchScript graph on stdout). Gradient methods do
not need the export, and forward-only methods (Score-CAM, Ablation-CAM, Eigen-CAM, CAM, ...) only
need forward passes, so :func:`engine_for` falls back to :class:`EagerEngine`: the same interface
as :class:`~agnostic_cam.engine.OnnxEngine` as far as the explainer uses it (``run``,
``batch_size_for``, ``with_outputs``, ``tail``), computed with the adapter's
``eager_forward(x, replace)`` (PyTorch: :mod:`.torch_fallback`, under ``torch.no_grad()`` in eval mode with every training flag restored; Keras: the graph evaluator of
:mod:`.keras_graph`), batched with the same automatic batch-size rule as ONNX Runtime on CPU, or
``batch_size``. Keras models fall back when tf2onnx leaves an op ONNX Runtime cannot load (e.g. a
``Lambda`` calling ``tf.math.lgamma``).

The "tail" (outputs for new layer activations, Ablation-CAM) is a full forward pass of the
image the activations belong to, with the target layer's output replaced by the new values: what
the ONNX tail graph computes with the head's values as extra inputs, so skip connections around
the layer see the image's own values.

The other exporter (``dynamo=True``) is not tried: it takes ~20 s on VGG-11 at 64 px on 2 cores
and its graphs need the opset-18 path; eager forward passes are exact and start at once.

The exporter's own prints (the TorchScript graph dump) are kept off the user's stdout and stderr
by redirecting file descriptors 1 and 2 for the duration of the export (:func:`quiet_fds`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings

import numpy as np

from agnostic_cam.engine.graph import ACTIVATION, NATIVE, OUTPUT
from agnostic_cam.engine.session import _MAX_AUTO_BATCH, _TARGET_BATCH_BYTES  # the same rule as on ORT CPU
from agnostic_cam.errors import AgnosticCamError, BackendError

INPUT = "input"


class ExportFallbackWarning(UserWarning):
    """The model could not be exported to ONNX; forward-only methods run on the framework itself."""


class ExportFailed(BackendError):
    """The ONNX export (``torch.onnx.export``, tf2onnx) failed; ``cause`` is the exporter's exception."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {one_line(cause)}")
        self.cause = cause


def one_line(e: BaseException, limit: int = 160) -> str:
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return first if len(first) <= limit else first[:limit - 3] + "..."


@contextlib.contextmanager
def quiet_fds():
    """Redirect file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``) to a temporary file for
    the block: C++ and Python prints of the exporter never reach the user's terminal. Process-wide
    while it lasts (another thread's prints in that window are dropped too).

    Serialised by a process-wide re-entrant lock: two threads exporting at once would otherwise each
    save the other's sink as "the original" descriptor and could leave fd 1 pointing at a deleted
    file after both returned. A nested call in the same thread is a no-op (already quiet)."""
    with _QUIET_LOCK:
        if _QUIET_DEPTH[0]:
            _QUIET_DEPTH[0] += 1
            try:
                yield
            finally:
                _QUIET_DEPTH[0] -= 1
            return
        _QUIET_DEPTH[0] = 1
        try:
            with _redirected_fds():
                yield
        finally:
            _QUIET_DEPTH[0] = 0


_QUIET_LOCK = threading.RLock()
_QUIET_DEPTH = [0]  # nesting depth of quiet_fds in the thread holding _QUIET_LOCK


@contextlib.contextmanager
def _redirected_fds():
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    saved = []
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:  # fd not open (e.g. a daemon): nothing to protect
                    continue
                os.dup2(sink.fileno(), fd)
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                yield
        finally:
            for fd, old in saved:
                os.dup2(old, fd)
                os.close(old)


def run_export(export) -> None:
    """Call ``export()`` (the exporter) with its prints silenced; any failure of the
    exporter becomes :class:`ExportFailed`."""
    try:
        with quiet_fds():
            export()
    except (ImportError, AgnosticCamError):  # a missing exporter or our own checks: not a fallback case
        raise
    except Exception as e:  # noqa: BLE001 - the exporters raise many types (SymbolicValueError, ...)
        raise ExportFailed(e) from e


def engine_for(adapter, sample_shape: tuple[int, ...]):
    """An ONNX Runtime engine for ``adapter`` at ``sample_shape``, or an :class:`EagerEngine` with one
    :class:`ExportFallbackWarning` when the export (or loading it in ONNX Runtime) fails."""
    from agnostic_cam.engine import OnnxEngine

    try:
        engine = OnnxEngine(adapter.export_onnx(sample_shape), adapter.providers, adapter.batch_size)
        engine.session  # noqa: B018 - load now, so an unloadable export falls back too
        return engine
    except ExportFailed as e:
        why = f"ONNX export failed ({e})"
    except ValueError as e:
        if "ONNX Runtime cannot load" not in str(e):
            raise
        why = f"ONNX Runtime cannot load the export ({one_line(e)})"
    fw = {"torch": "PyTorch", "keras": "Keras"}.get(adapter.framework, adapter.framework)
    warnings.warn(f"{why} for input shape {tuple(sample_shape)}: forward-only methods run as batched {fw} "
                  "forward passes instead (same maps, slower than ONNX Runtime)", ExportFallbackWarning, stacklevel=2)
    return EagerEngine(adapter)


class EagerEngine:
    """Forward passes of an adapter's model, with the OnnxEngine interface the explainer uses.

    Names: ``"input"`` (the images), ``"output"`` (the explained output (N, K)), ``"activation"``
    (the target layer as the export gives it), ``"layer_output"`` (the layer's own tensor, e.g. tokens).
    ``run({adapter.native_name: A, "input": X}, ["output"])`` is the tail: image rows X with the target
    layer's output replaced by A (same batch).
    """

    input_name = INPUT
    output_names = [OUTPUT, ACTIVATION]
    fixed_batch = None
    device = "cpu"

    def __init__(self, adapter):
        self.adapter = adapter

    def batch_size_for(self, sample: np.ndarray) -> int:
        if self.adapter.batch_size:
            return self.adapter.batch_size
        per = max(1, int(np.prod(sample.shape[1:])) * 4)
        return int(max(1, min(_MAX_AUTO_BATCH["cpu"], _TARGET_BATCH_BYTES["cpu"] // per)))

    def with_outputs(self, names) -> EagerEngine:
        unknown = set(names) - {INPUT, OUTPUT, ACTIVATION, NATIVE}
        if unknown:
            raise BackendError(f"the PyTorch forward fallback has no tensor(s) {sorted(unknown)}")
        return self

    def tail(self, start: str, outputs=None) -> tuple[EagerEngine, list[str]]:
        """(engine, extra inputs): the tail takes the layer's new values plus the image rows."""
        if start != self.adapter.native_name:
            raise BackendError(f"the PyTorch forward fallback can only restart at the target layer, not {start!r}")
        return self, [INPUT]

    def reads(self, source: str, target: str) -> None:
        """Unknown: the eager forward has no graph to read (only numeric checks prove its tail)."""
        return None

    def run(self, feeds, outputs=None, batch_size: int | None = None) -> list[np.ndarray]:
        if isinstance(feeds, np.ndarray):
            feeds = {INPUT: feeds}
        names = list(outputs) if outputs else list(self.output_names)
        x = feeds[INPUT]
        replace = feeds.get(self.adapter.native_name)
        bs = batch_size or self.batch_size_for(x)
        results: list[list[np.ndarray]] = [[] for _ in names]
        for lo in range(0, x.shape[0], bs):
            vals = self._forward(x[lo:lo + bs], None if replace is None else replace[lo:lo + bs])
            vals[INPUT] = x[lo:lo + bs]
            for r, name in zip(results, names):
                r.append(np.asarray(vals[name], dtype=np.float32))
        return [np.concatenate(r) if r else np.zeros((0,), np.float32) for r in results]

    def _forward(self, x: np.ndarray, replace: np.ndarray | None) -> dict[str, np.ndarray]:
        out, act = self.adapter.eager_forward(np.ascontiguousarray(x, dtype=np.float32), replace)
        view = getattr(self.adapter, "eager_view", None)  # the layer's own tensor -> the ACTIVATION view
        return {OUTPUT: out, NATIVE: act, ACTIVATION: act if view is None or act is None else view(act)}
