"""engine/threads.py: NumPy's BLAS runs on one thread while an explain call runs ONNX Runtime on the CPU
(OpenBLAS threads spinning after each small product took the cores from ONNX Runtime: RISE on
ResNet-18 ran 13.9 ms per masked image instead of 10.7), and the previous thread count comes back
afterwards: after an exception, and after two threads explained at once."""
import threading

import numpy as np
import onnx
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from agnostic_cam import Explainer
from agnostic_cam.engine.threads import blas_one_thread


def _blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.fixture(scope="module")
def ex(tmp_path_factory, torch):
    from onnx_helpers import export_torch, torch_net

    path = tmp_path_factory.mktemp("blas") / "net.onnx"
    onnx.save(export_torch(torch_net(seed=3), 24), str(path))
    return Explainer.from_onnx(str(path), providers=["CPUExecutionProvider"], progress=False)


def test_one_blas_thread_during_explain_and_restored_after(ex):
    assert _blas_threads(), "NumPy is linked to a BLAS threadpoolctl can see"
    x = np.random.default_rng(0).random((2, 3, 24, 24), dtype=np.float32)
    seen = []

    def target(out):  # called by the method while it runs
        seen.append(_blas_threads())
        return out[:, 1]

    def failing(out):
        seen.append(_blas_threads())
        raise ZeroDivisionError("a user's target that fails")

    with threadpool_limits(2, user_api="blas"):  # a known starting point above one thread
        e = ex.explain(x, "rise", target=target, masks=8, batch_size=4)
        assert len(seen) >= 2 and all(s == {1} for s in seen)
        assert _blas_threads() == {2}
        with pytest.raises(ZeroDivisionError):
            ex.explain(x, "rise", target=failing, masks=4)
        assert seen[-1] == {1} and _blas_threads() == {2}
    # the limit changes no number: the same map from a second call
    assert np.array_equal(e.raw, ex.explain(x, "rise", target=lambda o: o[:, 1], masks=8, batch_size=4).raw)


def test_two_threads_explaining_leave_the_thread_count_as_it_was(ex):
    """Two threads explain at once (their calls overlap: a barrier inside the target): the last one
    to finish puts the count back, whatever the order. (OpenBLAS may ignore a limit set from a
    thread other than the main one; that costs speed, never a number.)"""
    x = np.random.default_rng(1).random((1, 3, 24, 24), dtype=np.float32)
    go = threading.Barrier(2, timeout=60)
    out, errors = [], []

    def target(o):
        go.wait()
        return o[:, 2]

    def work():
        try:
            out.append(ex.explain(x, "rise", target=target, masks=4, batch_size=4).raw)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    with threadpool_limits(2, user_api="blas"):
        th = [threading.Thread(target=work) for _ in range(2)]
        [t.start() for t in th]
        [t.join() for t in th]
        assert not errors and len(out) == 2 and np.array_equal(out[0], out[1])
        assert _blas_threads() == {2}
        with blas_one_thread():  # and in this (main) thread the guard does limit
            assert _blas_threads() == {1}
            with blas_one_thread():
                assert _blas_threads() == {1}
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}
