"""OnnxEngine: one ONNX Runtime session, batched runs of any size, graph views."""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from agnostic_cam.engine import graph as G
from agnostic_cam.engine.blocks import prenorm_block
from agnostic_cam.errors import InputError, MissingDependencyError, MissingFileError, ModelError

# Bytes of input per batch the engine aims for when the caller does not choose a batch size.
# CPU: moderate batches bound memory; measured on a 2-core machine, ResNet-18 at 224 px runs at
# the same per-image speed from batch 4 to 32 and ResNet-50 gains ~10% from batch 6 to 16, so
# 224 px images go 17 at a time (~10 MiB of input). GPU: larger batches fill the device.
_TARGET_BATCH_BYTES = {"cpu": 10 * 2**20, "gpu": 48 * 2**20}
_MAX_AUTO_BATCH = {"cpu": 32, "gpu": 128}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")
# The most input bytes one ``session.run`` may be handed (4 GiB). A graph whose fixed batch or
# fixed image size needs more is refused with a ModelError instead of exhausting memory; raise
# it (``agnostic_cam.engine.session.MAX_RUN_BYTES = ...``) on a machine that can afford more.
MAX_RUN_BYTES = 4 * 2**30
# Threads inside each op of the sessions created from now on (None: ONNX Runtime's default, the
# physical cores). Processes that share a machine (Ray audit workers) set it to their share.
INTRA_OP_THREADS: int | None = None


def check_run_bytes(rows: int, sample_shape: tuple, what: str) -> None:
    """Refuse a run of ``rows`` float32 samples of ``sample_shape`` above :data:`MAX_RUN_BYTES`."""
    dims = [d for d in sample_shape if isinstance(d, int) and d > 0]
    need = 4 * rows * int(np.prod(dims, dtype=np.float64)) if dims else 0
    if need > MAX_RUN_BYTES:
        raise ModelError(f"{what} needs {need / 2**30:.1f} GiB of input per run (batch {rows} x {tuple(sample_shape)} "
                         f"float32), more than the {MAX_RUN_BYTES / 2**30:.0f} GiB limit: export the model with a dynamic "
                         "batch dimension and a realistic image size, or raise "
                         "agnostic_cam.engine.session.MAX_RUN_BYTES if this machine has the memory")


_WIDEN = (np.dtype(np.float16), np.dtype(np.float64))


def _np_dtype(vi: onnx.ValueInfoProto) -> np.dtype:
    """NumPy dtype of a graph input: float16 / float64 when declared so, else float32."""
    t = vi.type.tensor_type.elem_type
    return {onnx.TensorProto.FLOAT16: np.dtype(np.float16), onnx.TensorProto.DOUBLE: np.dtype(np.float64)}.get(
        t, np.dtype(np.float32))


def onnxruntime():
    """The ``onnxruntime`` module, or a :class:`MissingDependencyError` naming the extras that install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError(
            "ONNX Runtime is not installed; it runs the forward passes. Install exactly one build: "
            "pip install 'agnostic-cam[cpu]' (onnxruntime) or pip install 'agnostic-cam[gpu]' (onnxruntime-gpu, "
            "CUDA)") from None
    return ort


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, then CPU."""
    ort = onnxruntime()
    avail = ort.get_available_providers()
    order = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
    return order or list(avail)


def load_model(model: onnx.ModelProto | bytes | str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX model from a ModelProto, serialized bytes or a file path, with a clear error."""
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        if isinstance(model, (bytes, bytearray)):
            proto = onnx.load_from_string(bytes(model))
        else:
            path = Path(model)
            if not path.is_file():
                raise MissingFileError(f"ONNX file not found: {path}")
            proto = onnx.load(str(path))
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf raises many types
        raise ModelError(f"not a readable ONNX model ({type(e).__name__}: {e}); is the file truncated or of another format?") from None
    if not proto.graph.node:
        raise ModelError("not a readable ONNX model: the graph has no nodes (truncated or not an ONNX file?)")
    if isinstance(model, (bytes, bytearray)) and _external(proto):
        raise ModelError(f"this ONNX model keeps its weights in external data files ({', '.join(_external(proto)[:3])}), "
                         "which serialized bytes cannot carry: pass the path of the .onnx file (next to its data "
                         "files), or onnx.load(path) as a ModelProto")
    return proto


def _external(proto: onnx.ModelProto) -> list[str]:
    """The external data files the graph's initializers point to."""
    files = []
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), "?")
            files += [loc] if loc not in files else []
    return files


def _allocation_failure(e: Exception) -> bool:
    msg = str(e).lower()
    return "alloc" in msg or "out of memory" in msg


class OnnxEngine:
    """Runs an ONNX model on ONNX Runtime in batches.

    Parameters
    ----------
    model: ModelProto, serialized bytes or path.
    providers: ONNX Runtime execution providers; default CUDA (when available) then CPU.
    batch_size: rows per ``session.run``; default chosen from the input size and the device.
    io_binding: run through ONNX Runtime's I/O binding (inputs copied to the device once per
        batch, outputs bound on the host); None uses it exactly when a GPU provider is active.
    """

    def __init__(self, model, providers: Sequence[str] | None = None, batch_size: int | None = None,
                 io_binding: bool | None = None):
        self.model = load_model(model)
        self.providers = list(providers) if providers else default_providers()
        self._batch_size = batch_size
        self._io_binding = io_binding
        self._session = None
        self._providers: list[str] | None = None
        self._lock = threading.Lock()  # the session is created once, also when threads race for it
        inits = {i.name for i in self.model.graph.initializer}
        self.inputs = [i for i in self.model.graph.input if i.name not in inits]
        self.output_names = [o.name for o in self.model.graph.output]
        # fp16 / fp64 graphs: feeds are cast to each input's declared type, float outputs come back float32
        self._in_dtypes = {i.name: _np_dtype(i) for i in self.inputs}

    # -- session -------------------------------------------------------------------------------
    @property
    def session(self):
        if self._session is not None:
            return self._session
        with self._lock:
            return self._session if self._session is not None else self._create_session()

    def _create_session(self):
        if self._session is None:
            ort = onnxruntime()

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            # Explicit defaults that matter for many same-shape runs: one op at a time with all
            # cores inside each op (intra-op threads default to the physical cores), and a
            # memory pattern reused from run to run.
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.enable_mem_pattern = True
            opts.enable_cpu_mem_arena = True
            if INTRA_OP_THREADS:
                opts.intra_op_num_threads = int(INTRA_OP_THREADS)
            try:
                self._session = ort.InferenceSession(self.model.SerializeToString(), opts, providers=self.providers)
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"ONNX Runtime cannot load this model: {e}") from None
        return self._session

    @property
    def active_providers(self) -> list[str]:
        if self._providers is None:  # fixed once the session exists; asking ONNX Runtime costs ~1 ms a call
            self._providers = list(self.session.get_providers())
        return list(self._providers)

    @property
    def device(self) -> str:
        """'gpu' when the session's first provider is a GPU provider, else 'cpu'."""
        return "gpu" if self.active_providers[0] in _GPU_PROVIDERS else "cpu"

    @property
    def uses_io_binding(self) -> bool:
        """Whether :meth:`run` goes through I/O binding (default: exactly on a GPU provider)."""
        return self.device == "gpu" if self._io_binding is None else bool(self._io_binding)

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    def input_shape(self, name: str | None = None) -> tuple:
        """Declared shape of an input: ints for fixed dims, None/str for dynamic ones."""
        vi = next((i for i in self.inputs if i.name == (name or self.input_name)), None)
        if vi is None:
            raise InputError(f"the model has no input named {name!r}; inputs: {[i.name for i in self.inputs]}")
        return G.tensor_shape(vi) or ()

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph's first input is fixed to, or None when it is dynamic."""
        shape = self.input_shape()
        if shape and isinstance(shape[0], int) and shape[0] > 0:
            return shape[0]
        return None

    def batch_size_for(self, sample: np.ndarray) -> int:
        if self.fixed_batch is not None:
            return self.fixed_batch
        if self._batch_size:
            return self._batch_size
        per = max(1, int(np.prod(sample.shape[1:])) * 4)
        dev = self.device
        return int(max(1, min(_MAX_AUTO_BATCH[dev], _TARGET_BATCH_BYTES[dev] // per)))

    # -- running -------------------------------------------------------------------------------
    def run(self, feeds: np.ndarray | dict[str, np.ndarray], outputs: Sequence[str] | None = None,
            batch_size: int | None = None) -> list[np.ndarray]:
        """Run ``outputs`` (default: all graph outputs) on ``feeds`` of any batch size.

        ``feeds`` is one array for the first input or a dict name -> array; every array's
        first dimension is the batch. Chunks by ``batch_size``; pads the last chunk when the
        graph's batch dimension is fixed.
        """
        if isinstance(feeds, np.ndarray):
            feeds = {self.input_name: feeds}
        names = list(outputs) if outputs else self.output_names
        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise ModelError(f"the graph needs input(s) {missing} that were not fed (fed: {sorted(feeds)}); only models "
                             "whose sole input is the image batch can be explained")
        first = next(iter(feeds.values()))
        n = first.shape[0]
        fixed = self.fixed_batch
        bs = fixed or batch_size or self.batch_size_for(first)
        if fixed:
            check_run_bytes(fixed, first.shape[1:], "this graph's fixed batch")
        results: list[list[np.ndarray]] = [[] for _ in names]
        for lo in range(0, n, bs):
            chunk = {k: np.ascontiguousarray(v[lo:lo + bs], dtype=self._in_dtypes.get(k, np.float32))
                     for k, v in feeds.items()}
            m = next(iter(chunk.values())).shape[0]
            if fixed and m < fixed:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], fixed - m, axis=0)]) for k, v in chunk.items()}
            try:
                outs = self._run_bound(names, chunk) if self.uses_io_binding else self.session.run(names, chunk)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own (unexported) types
                if not _allocation_failure(e):
                    raise
                rows = next(iter(chunk.values())).shape[0]
                fix = (f"the graph's batch dimension is fixed to {fixed}: export it with a dynamic batch dimension "
                       "(or a small fixed batch)") if fixed else f"pass a smaller batch_size (this run: {rows} rows)"
                raise ModelError(f"ONNX Runtime ran out of memory running a batch of {rows} ({first.shape[1:]} each): "
                                 f"{fix}") from None
            for r, o in zip(results, outs):
                r.append(o[:m].astype(np.float32) if o.dtype in _WIDEN else o[:m])
        if n == 0:
            return [np.zeros((0,), np.float32) for _ in names]
        return [np.concatenate(r) if len(r) > 1 else r[0] for r in results]

    def _run_bound(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One ``session.run`` through I/O binding: each input is copied to the session's device
        per batch and outputs are bound to host memory, so nothing waits on a device-side output."""
        binding = self.session.io_binding()
        for k, v in feeds.items():
            binding.bind_cpu_input(k, v)
        for name in names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    # -- graph views ---------------------------------------------------------------------------
    def with_outputs(self, names: Sequence[str]) -> OnnxEngine:
        """A new engine on the same graph that also outputs the tensors ``names``."""
        return OnnxEngine(G.with_outputs(self.model, list(names)), self.providers, self._batch_size, self._io_binding)

    def tail(self, start: str, outputs: Sequence[str] | None = None, also: tuple[str, ...] = ()
             ) -> tuple[OnnxEngine, list[str]]:
        """Engine for the part of the graph after tensor ``start`` (and tensors ``also``, fed instead of
        computed); also the extra inputs it needs."""
        t = G.cut_tail(self.model, start, list(outputs or self.output_names[:1]), tuple(also))
        return OnnxEngine(t.model, self.providers, self._batch_size, self._io_binding), t.extra_inputs

    def prenorm_block(self, tensor: str, output: str) -> tuple[str, str]:
        """(block input, its first norm's output) of the pre-norm block at ``tensor`` (engine.blocks)."""
        return prenorm_block(self.model, tensor, output)

    def reads(self, source: str, target: str) -> bool:
        """Whether tensor ``target`` is computed from tensor ``source`` in this engine's graph."""
        return G.depends_on(self.model, source, target)

    def spatial_tensors(self) -> list[G.LayerInfo]:
        return G.spatial_tensors(self.model)
