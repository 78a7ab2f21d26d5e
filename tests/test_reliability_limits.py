"""Issue #11 items 4-6 and the Ablation-CAM tail finding: option validation for every method,
bounded memory (engine LRU, batched gradient passes, huge fixed ONNX inputs refused), ONNX
models with inputs explain() cannot feed, and a tail that must read the tapped tensor.

Reduced for speed: tiny CNNs on 16-24 px images; ONNX graphs are built by hand, the huge ones
are only declared (never run).
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from agnostic_cam import Explainer, registry
from agnostic_cam.engine import OnnxEngine
from agnostic_cam.errors import ModelError, NonFiniteError, OptionError
from test_reliability_model import assert_no_errors, in_threads, make_cnn

X = np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32)
BAD_INTS = [-1, -5, 0, 2.5, "8", True, float("nan")]


@pytest.fixture(scope="module")
def ex(torch):
    return Explainer.from_torch(make_cnn(torch).eval(), "conv2", progress=False)


# -- item 4: options -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(registry()))
def test_bad_batch_size_is_refused_by_every_method(ex, method):
    for bs in BAD_INTS:
        with pytest.raises(OptionError, match="batch_size"):
            ex.explain(X, method, batch_size=bs)


COUNTED = [(m, name) for m in sorted(registry()) for name in ("steps", "samples")
           if name in inspect.signature(registry()[m].__init__).parameters]

assert {m for m, _ in COUNTED} >= {"integrated_gradients", "smoothgrad"}  # never an empty parametrisation


@pytest.mark.parametrize("method, name", COUNTED)
def test_bad_counts_are_refused_by_every_method_that_takes_them(ex, method, name):
    for v in BAD_INTS:
        with pytest.raises(OptionError, match=name):
            ex.explain(X, method, **{name: v})


def test_smoothgrad_noise(ex):
    for noise in (-0.1, "0.1", None):
        with pytest.raises(OptionError, match="noise"):
            ex.explain(X, "smoothgrad", noise=noise, samples=2)
    for noise in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(NonFiniteError, match="noise"):
            ex.explain(X, "smoothgrad", noise=noise, samples=2)
    ok = ex.explain(X, "smoothgrad", noise=0, samples=2)       # zero noise: exactly the base method
    np.testing.assert_allclose(ok.heatmap, ex.explain(X, "saliency").heatmap, atol=1e-6)


def test_valid_batch_sizes_do_not_change_results(ex):
    for method, opts in (("scorecam", {}), ("ablationcam", {}), ("gradcam", {}), ("saliency", {}),
                         ("integrated_gradients", {"steps": 4})):
        ref = ex.explain(X, method, target=1, **opts).heatmap
        for bs in (1, 3, np.int64(2), 10**6):
            np.testing.assert_allclose(ex.explain(X, method, target=1, batch_size=bs, **opts).heatmap, ref, atol=1e-5)


def test_shared_checkers_directly():
    from agnostic_cam.core.options import check_options, finite_number, positive_int

    assert positive_int("n", np.int32(3)) == 3 and positive_int("n", None, optional=True) is None
    assert check_options({"batch_size": np.int64(4), "other": "x"}) == {"batch_size": 4, "other": "x"}
    assert finite_number("f", 0) == 0.0
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteError):
            finite_number("f", bad)
    with pytest.raises(OptionError):
        finite_number("f", -1.0, lo=0.0)


# -- item 5: memory --------------------------------------------------------------------------------
def test_engine_cache_is_bounded(torch):
    m = make_cnn(torch).eval()
    ex = Explainer.from_torch(m, "conv2", progress=False)
    limit = ex.adapter.max_engines
    assert limit == 4
    sizes = list(range(12, 12 + 2 * (limit + 2), 2))
    maps = {}
    for s in sizes:
        x = np.random.default_rng(s).normal(size=(1, 3, s, s)).astype(np.float32)
        maps[s] = (x, ex.explain(x, "eigencam").heatmap)
        assert len(ex.adapter._engines) <= limit
    x, first = maps[sizes[0]]                          # evicted, exported again: same result
    np.testing.assert_allclose(ex.explain(x, "eigencam").heatmap, first, atol=1e-6)
    assert list(ex.adapter._engines)[-1] == x.shape[1:]


@pytest.mark.parametrize("method", ["gradcam", "saliency", "gradcam++"])
def test_gradient_methods_run_in_batches(torch, method):
    m = make_cnn(torch).eval()
    seen = []
    handle = m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    try:
        ex = Explainer.from_torch(m, "conv2", progress=False)
        x = np.random.default_rng(2).normal(size=(5, 3, 16, 16)).astype(np.float32)
        ref = np.concatenate([ex.explain(x[i:i + 1], method, target=i % 5).heatmap for i in range(5)])
        seen.clear()
        got = ex.explain(x, method, target=[i % 5 for i in range(5)], batch_size=2).heatmap
        assert seen == [2, 2, 1]
        np.testing.assert_allclose(got, ref, atol=1e-5)
        seen.clear()
        big = np.repeat(x, 8, axis=0)                   # 40 images, no batch size: bounded automatic chunks
        ex.explain(big, method)
        assert len(seen) >= 2 and max(seen) <= 32 and sum(seen) == 40
    finally:
        handle.remove()


def _conv_graph(input_shape, name="x", extra_inputs=()):
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", [name, "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"])]
    feed = "r"
    for e in extra_inputs:
        nodes.append(helper.make_node("Add", [feed, e], [f"{feed}_{e}"]))
        feed = f"{feed}_{e}"
    nodes += [helper.make_node("GlobalAveragePool", [feed], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("MatMul", ["f", "fc"], ["y"])]
    ins = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(input_shape))]
    ins += [helper.make_tensor_value_info(e, TensorProto.FLOAT, ["n", 4, input_shape[2], input_shape[3]])
            for e in extra_inputs]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], 2])],
                          initializer=[w, fc])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_huge_fixed_onnx_inputs_are_refused():
    with pytest.raises(ModelError, match="GiB"):
        Explainer.from_onnx(_conv_graph([1, 3, 60000, 60000]))
    with pytest.raises(ModelError, match="GiB"):
        Explainer.from_onnx(_conv_graph([200000, 3, 64, 64]))
    small = Explainer.from_onnx(_conv_graph([4, 3, 16, 16]), progress=False)   # a sane fixed batch still runs
    assert small.explain(X, "eigencam").heatmap.shape == (2, 16, 16)


# -- item 6: ONNX inputs that cannot be fed ---------------------------------------------------------
def test_onnx_inputs_explain_cannot_feed():
    proto = _conv_graph(["n", 3, 16, 16], extra_inputs=("bias",))
    with pytest.raises(ModelError, match="'bias'"):
        Explainer.from_onnx(proto, input_name="x")
    with pytest.raises(ModelError, match="not fed"):
        from agnostic_cam.engine import OnnxEngine

        OnnxEngine(proto).run(X)


# -- reviewer's finding: the tail must read the tapped tensor ----------------------------------------
def test_ablation_tail_on_a_side_branch_is_refused(torch):
    from torch import nn

    class SideBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.side = nn.Conv2d(8, 4, 3, padding=1)   # computed, never read by the output
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            a = torch.relu(self.conv(x))
            self.side(a)
            return self.fc(a.mean((2, 3)))

    torch.manual_seed(0)
    m = SideBranch().eval()
    ex = Explainer.from_torch(m, "side", progress=False)
    with pytest.raises(ModelError, match="does not read layer 'side'"):
        ex.explain(X, "ablationcam")
    main = Explainer.from_torch(m, "conv", progress=False).explain(X, "ablationcam")
    assert main.raw.max() > 0                           # the main path still works


def test_tail_check_catches_an_output_that_ignores_the_activation():
    """Graph dependency exists, but the tail multiplies the activation by zero: the numeric probe
    (move the activation, the output must move) catches it."""
    from agnostic_cam.core.checks import verify_tail
    from agnostic_cam.methods import Capture

    a = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    out = np.ones((2, 2), np.float32)
    cap = Capture(np.zeros((2, 3, 8, 8), np.float32), "NCHW", out, out[:, 0], np.zeros(2, np.int64), None, a)
    proto = helper.make_model(helper.make_graph(
        [helper.make_node("Mul", ["act", "zero"], ["m"]), helper.make_node("ReduceSum", ["m"], ["s"], keepdims=0)],
        "t", [helper.make_tensor_value_info("act", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.zeros(1, np.float32), "zero")]))
    with pytest.raises(ModelError, match="does not change"):
        verify_tail(lambda acts, image: np.ones((len(image), 2), np.float32), cap, "L", OnnxEngine(proto).reads("act", "s"))


def test_onnx_explainer_shared_by_threads():
    """Item 1 on a bare ONNX model: sessions and tail graphs are created once while two threads
    race for them; every call succeeds and matches a single-threaded run."""
    ex = Explainer.from_onnx(_conv_graph(["n", 3, 16, 16]), gradients=False, progress=False)
    methods = ("ablationcam", "scorecam")
    out = in_threads(*(lambda meth=meth: [ex.explain(X, meth, target=1).heatmap for _ in range(5)] for meth in methods))
    assert_no_errors(out)
    for i, method in enumerate(methods):
        ref = ex.explain(X, method, target=1).heatmap
        for h in out[i]:
            np.testing.assert_allclose(h, ref, atol=1e-6)
    assert len(ex.adapter._engines) == 1 and len(ex._capturer._tails) == 1
