"""Shared fixtures: seeded torch models (no downloads) and small inputs; how pytest-xdist splits the suite."""
from __future__ import annotations

import os

import numpy as np
import pytest

# Modules kept out of each other's way in two xdist workers: both run on a real local Ray
# (ray.init(num_cpus=2)), and two clusters at once on 2 cores would compete for them (a precaution:
# two seeded runs that did put their tests in both workers at once passed). In one worker, one after
# the other, they share one Ray session (the ray_cluster fixture below).
SERIAL_GROUPS = {"test_audit_ray.py": "ray", "test_compare.py": "ray"}
# Modules of long, independent tests without module-scoped fixtures: each test may go to any worker.
SPREAD = {"test_docs.py", "test_cpu_kinds.py"}
# Modules whose module-scoped fixture is parametrized (one model per parameter): the tests of one
# parameter stay together, different parameters may go to different workers.
BY_PARAM = {"test_keras_apps.py"}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: ignored where it is not installed
def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n N --dist loadfile`` (``make test``): a module runs whole in one worker, so
    its module-scoped fixtures (exports, sessions, twins) are built once; the modules of one
    SERIAL_GROUPS group share a worker, one after the other; the tests of a SPREAD module are
    handed out one by one, those of a BY_PARAM module by parameter. (xdist's own ``--dist
    loadgroup`` marks do nothing under pytest 9: they rename ``item._nodeid``, which pytest 9 no
    longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            name = path.rsplit("/", 1)[-1]
            if name in SPREAD:
                return nodeid
            if name in BY_PARAM and nodeid.endswith("]"):
                return path + "[" + nodeid[nodeid.index("[") + 1:]
            return SERIAL_GROUPS.get(name, path)

    return ModuleScheduling(config, log)


def worker_threads() -> int:
    """Intra-op threads per test process: 2, or the machine's cores shared among the xdist workers
    (2 workers on 2 cores: 1 each; more threads than cores made every worker wait on the others)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return 2 if workers <= 1 else max(1, (os.cpu_count() or 2) // workers)


# The test processes' garbage collector and allocator (measured in docs/benchmarks.md, "The test suite's
# own time"): the suite builds thousands of models, graphs and sessions in long-lived processes.
# - CPython's default thresholds (700, 10, 10) ran a full collection over the millions of objects that
#   torch, TensorFlow and the test modules keep alive every few tests: 7% of the CPU time. These make
#   collections rarer; cycles are still collected, later.
# - glibc gave freed memory back to the system at once and mapped each large tensor anew, so most
#   allocations page-faulted their memory in again (2.2 million faults in 90 s of tests). Keeping up to
#   1 GiB of freed heap and mapping only allocations from 256 MiB up: 1.4 million.
# Both change how fast the tests run, not what they compute.
GC_THRESHOLDS = (20000, 20, 40)
MALLOPT = {-1: 1 << 30, -2: 64 << 20, -3: 256 << 20}  # M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD


def _tune_process() -> None:
    import ctypes
    import gc

    gc.set_threshold(*GC_THRESHOLDS)
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc (Linux); elsewhere the allocator's defaults stay
    except OSError:
        return
    for param, value in MALLOPT.items():
        libc.mallopt(param, value)


def _exit_without_teardown() -> None:
    """The last exit handler of an xdist worker: end the process before the interpreter tears down
    torch and TensorFlow (2-3 s of freeing modules and of static destructors deregistering every
    operator, measured in docs/benchmarks.md). By then the worker has sent its reports and the
    controller has closed the channel, and the exit handlers registered after it (those of the
    frameworks, Ray and the test modules, imported later) have run; those registered before it (at
    pytest's own start, such as logging's, whose handlers here only write to streams) are skipped, so
    Python's streams are flushed here. Only in a worker: its exit status carries no result, while the
    main process's status is pytest's verdict."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: nothing to flush
            pass
    os._exit(0)


def pytest_configure(config):
    """The process's collector and allocator (``_tune_process``). An xdist worker's ONNX Runtime
    sessions, PyTorch and TensorFlow take its share of the cores, as a Ray audit worker's do: with two
    workers on two cores, each framework's default of one thread per core put four busy (and
    spin-waiting) threads on two cores. Set before any test module imports a framework (the OpenMP
    runtime and TensorFlow read these when they start). A worker ends without the interpreter's
    teardown (``_exit_without_teardown``)."""
    _tune_process()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import atexit

        atexit.register(_exit_without_teardown)  # before any framework is imported: runs after their handlers
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        from agnostic_cam.engine import session

        session.INTRA_OP_THREADS = worker_threads()
        for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ.setdefault(var, str(worker_threads()))


@pytest.fixture(scope="session")
def torch():
    import torch

    torch.set_num_threads(worker_threads())
    return torch


@pytest.fixture(scope="session")
def resnet18(torch):
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="session")
def small_cnn(torch):
    """A custom CNN with an in-place ReLU, F.relu in forward and a GAP + linear head."""
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.act1 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.conv3 = nn.Conv2d(16, 24, 3, padding=1)
            self.act3 = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(24, 5)

        def forward(self, x):
            x = self.act1(self.conv1(x))
            x = nn.functional.relu(self.bn2(self.conv2(x)))
            x = self.act3(self.conv3(x))
            return self.fc(self.pool(x).flatten(1))

    torch.manual_seed(1)
    m = SmallCNN().eval()
    with torch.no_grad():  # non-trivial BN statistics
        m.bn2.running_mean.uniform_(-0.2, 0.2)
        m.bn2.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="session")
def demo_model():
    from agnostic_cam.demo.torch_model import load_demo_net

    return load_demo_net()


@pytest.fixture(scope="session")
def onnx_net32(tmp_path_factory, torch):
    """The audits' 32 px ONNX CNN (onnx_helpers.torch_net(seed=4)), exported once per session and
    shared read-only by the audit test modules (each exported its own copy before)."""
    import onnx

    from onnx_helpers import export_torch, torch_net

    p = tmp_path_factory.mktemp("onnx_net32") / "net.onnx"
    onnx.save(export_torch(torch_net(seed=4), 32), str(p))
    return p


@pytest.fixture
def rng():
    return np.random.default_rng(1234)



# -- one real local Ray for the Ray test modules ----------------------------------------------------
_RAY = {"ours": False}


@pytest.fixture
def ray_cluster():
    """A real local Ray (``ray.init(num_cpus=2)``) shared by the tests of the SERIAL_GROUPS "ray" modules,
    which run in one worker one after the other: started by the first test that asks for it (about 3 s
    and 0.7 GB of daemons), shut down after the last test of those modules (``pytest_runtest_teardown``
    below) rather than once per module or test, and never left idle while other modules run."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        _RAY["ours"] = True
    return ray


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Shut down the shared Ray when the next test is not in a Ray module (or there is none)."""
    if _RAY["ours"] and (nextitem is None or SERIAL_GROUPS.get(nextitem.path.name) != "ray"):
        import ray

        ray.shutdown()
        _RAY["ours"] = False
