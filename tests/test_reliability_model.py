"""Issue #11 items 1-3 and 6: the user's model is never changed (two threads included), in-place
weight edits are seen, non-finite numbers and unusable models get typed errors.

Reduced for speed: a 3-layer CNN on 16-24 px images; the races are provoked with a barrier and
a few dozen calls per thread (each call is milliseconds).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.errors import AgnosticCamError, InputError, ModelError, NonFiniteError, OptionError


def make_cnn(torch, seed: int = 0, dtype=None):
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.drop = nn.Dropout(0.5)
            self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
            self.fc = nn.Linear(12, 5)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv1(x)))
            x = torch.relu(self.conv2(self.drop(x)))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(seed)
    m = Tiny()
    return m.to(dtype) if dtype is not None else m


def state(m):
    return ([(n, mod.training) for n, mod in m.named_modules()],
            [(n, p.requires_grad) for n, p in m.named_parameters()],
            {k: v.detach().clone() for k, v in m.state_dict().items()})


def assert_state(before, m):
    modes, grads, sd = state(m)
    assert modes == before[0], "a module's train/eval mode changed"
    assert grads == before[1], "a parameter's requires_grad changed"
    for k, v in sd.items():
        assert torch_equal(v, before[2][k]), f"{k} changed"


def torch_equal(a, b):
    return bool((a == b).all()) if a.numel() else True


X = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)


def in_threads(*calls):
    """Run each callable in its own thread, all released at once by a barrier; returns each
    call's result, or the exception it raised."""
    out: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def work(i, fn):
        start.wait()
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001 - returned to the test, which asserts on it
            out[i] = e

    threads = [threading.Thread(target=work, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def assert_no_errors(results):
    errs = [r for r in results if isinstance(r, Exception)]
    assert not errs, errs


# -- item 1: threads ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_two_threads_leave_the_model_as_it_was(torch, method):
    m = make_cnn(torch).train()           # train mode + requires_grad=True: what a race would flip
    m.fc.weight.requires_grad_(False)     # a mixed pattern must survive too
    before = state(m)
    ex = Explainer.from_torch(m, "conv2", progress=False)
    ref = ex.explain(X, method, target=1).heatmap
    assert_state(before, m)

    def work():
        return [ex.explain(X, method, target=1).heatmap for _ in range(25)]

    results = in_threads(work, work)
    assert_no_errors(results)
    for r in results[0] + results[1]:  # eval mode during every call (dropout off): identical maps
        np.testing.assert_allclose(r, ref, atol=1e-5)
    assert_state(before, m)


def test_first_export_from_two_threads_happens_once(torch):
    """Two threads trigger the first ONNX export at once (forward methods); both succeed."""
    for attempt in range(3):
        m = make_cnn(torch, seed=attempt).eval()
        before = state(m)
        ex = Explainer.from_torch(m, "conv2", progress=False)
        out = in_threads(*(lambda meth=meth: ex.explain(X, meth, target=0).heatmap for meth in ("eigencam", "scorecam")))
        assert_no_errors(out)
        assert len(ex.adapter._engines) == 1          # one export for one input shape
        np.testing.assert_allclose(out[0], ex.explain(X, "eigencam", target=0).heatmap, atol=1e-6)
        assert_state(before, m)


def test_two_explainers_of_one_model_in_threads(torch):
    m = make_cnn(torch).train()
    before = state(m)
    exs = [Explainer.from_torch(m, "conv2", progress=False) for _ in range(2)]
    methods = ("gradcam", "eigencam", "saliency", "ablationcam")
    assert_no_errors(in_threads(*(lambda ex=ex: [ex.explain(X, meth) for meth in methods] for ex in exs)))
    assert_state(before, m)


# -- item 2: in-place weight edits --------------------------------------------------------------
@pytest.mark.parametrize("edit", ["mul_data", "copy_data", "permute_data", "bn_buffer"])
@pytest.mark.parametrize("method", ["eigencam", "scorecam", "ablationcam"])
def test_in_place_edits_are_seen_by_forward_methods(torch, edit, method):
    m = make_cnn(torch).eval()
    ex = Explainer.from_torch(m, "conv2", progress=False)
    ex.explain(X, method, target=2)                       # exports and caches the graph
    with torch.no_grad():
        if edit == "mul_data":
            m.conv1.weight.data.mul_(-1.5)
        elif edit == "copy_data":
            m.conv2.weight.data.copy_(torch.randn_like(m.conv2.weight))
        elif edit == "permute_data":                      # same values, same sum: only their order moves
            m.conv1.weight.data.copy_(m.conv1.weight.data.flip(0).clone())
        else:
            m.bn.running_mean.data.add_(0.7)
    got = ex.explain(X, method, target=2)
    fresh = Explainer.from_torch(m, "conv2", progress=False).explain(X, method, target=2)
    np.testing.assert_allclose(got.heatmap, fresh.heatmap, atol=1e-5)
    np.testing.assert_allclose(got.scores, fresh.scores, rtol=1e-5, atol=1e-5)


def test_fingerprint_sees_every_full_tensor_edit(torch):
    from agnostic_cam.adapters.pytorch.checks import fingerprint

    m = make_cnn(torch)
    base = fingerprint(m)
    for name, p in m.named_parameters():
        saved = p.detach().clone()
        with torch.no_grad():
            p.data.copy_(saved * 1.0001 + 1e-6)
        assert fingerprint(m) != base, name
        with torch.no_grad():
            p.data.copy_(saved)
        assert fingerprint(m) == base


# -- item 3: non-finite -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["scorecam", "eigencam", "ablationcam", "gradcam", "saliency"])
def test_nan_weight_is_named_never_a_map(torch, method):
    m = make_cnn(torch).eval()
    with torch.no_grad():
        m.conv2.weight[0, 0, 0, 0] = float("nan")
    ex = Explainer.from_torch(m, "conv2", progress=False)
    with pytest.raises(NonFiniteError) as e:
        ex.explain(X, method)
    assert "NaN" in str(e.value) and e.value.where


def test_nan_target_scores_and_options(torch):
    ex = Explainer.from_torch(make_cnn(torch).eval(), "conv2", progress=False)
    nan_target = lambda out: out[:, 0] * float("nan")  # noqa: E731
    for method in ("gradcam", "scorecam", "eigencam", "saliency", "integrated_gradients"):
        with pytest.raises(NonFiniteError, match="target"):
            ex.explain(X, method, target=nan_target)
    half_nan = lambda out: out[:, 0] * 0 / torch.tensor([1.0, 0.0])  # noqa: E731 - NaN for the 2nd image only
    with pytest.raises(NonFiniteError, match=r"image\(s\) \[1\]"):
        ex.explain(X, "gradcam", target=half_nan)
    with pytest.raises(NonFiniteError, match="baseline"):
        ex.explain(X, "integrated_gradients", baseline=np.full(X.shape[1:], np.nan, np.float32))
    with pytest.raises(NonFiniteError, match="baseline"):
        ex.explain(X, "integrated_gradients", baseline=float("inf"))
    for noise in (float("inf"), float("nan")):
        with pytest.raises(NonFiniteError, match="noise"):
            ex.explain(X, "smoothgrad", noise=noise)
    with pytest.raises(NonFiniteError, match="input"):
        ex.explain(np.where(X > 2, np.inf, X).astype(np.float32), "eigencam")


def test_nan_output_from_the_model(torch):
    from torch import nn

    class NanHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            a = self.conv(x)
            return torch.log(a.mean((2, 3)) - 10.0)  # log of a negative number: NaN

    ex = Explainer.from_torch(NanHead(), "conv", progress=False)
    for method in ("eigencam", "scorecam", "gradcam"):
        with pytest.raises(NonFiniteError, match="model output"):
            ex.explain(X, method, target=0)


# -- item 6: typed errors instead of deep tracebacks ----------------------------------------------
def test_wrong_channels_or_nhwc_without_input_shape(torch):
    ex = Explainer.from_torch(make_cnn(torch).eval(), "conv2", progress=False)
    for method in ("gradcam", "saliency", "integrated_gradients"):
        with pytest.raises(InputError, match="NHWC"):
            ex.explain(X.transpose(0, 2, 3, 1), method)
        with pytest.raises(InputError, match=r"shape \([12], 4, 16, 16\)"):
            ex.explain(np.zeros((2, 4, 16, 16), np.float32), method)
    with pytest.raises(AgnosticCamError):
        ex.explain(X.transpose(0, 2, 3, 1), "eigencam")


def test_meta_device_and_two_input_models(torch):
    from torch import nn

    with torch.device("meta"):
        meta = make_cnn(torch)
    with pytest.raises(ModelError, match="meta"):
        Explainer.from_torch(meta, "conv2")

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x, y):
            return (self.conv(x) + self.conv(y)).mean((2, 3))

    with pytest.raises(ModelError, match="2 required inputs"):
        Explainer.from_torch(TwoInputs(), "conv")


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_non_float32_models_on_forward_methods(torch, dtype):
    m32 = make_cnn(torch).eval()
    m = make_cnn(torch, dtype=getattr(torch, dtype)).eval()
    ex, ref = Explainer.from_torch(m, "conv2", progress=False), Explainer.from_torch(m32, "conv2", progress=False)
    tol = 1e-5 if dtype == "float64" else 5e-2
    for method in ("eigencam", "scorecam", "ablationcam", "gradcam"):
        got = ex.explain(X, method, target=1)
        assert got.heatmap.dtype == np.float32
        np.testing.assert_allclose(got.heatmap, ref.explain(X, method, target=1).heatmap, atol=tol)
    assert next(m.parameters()).dtype == getattr(torch, dtype)   # the model itself is untouched


def test_bad_targets_and_shapes(torch):
    ex = Explainer.from_torch(make_cnn(torch).eval(), "conv2", progress=False)
    for method in ("gradcam", "eigencam", "saliency"):
        for target in (2**70, -2**70, 5, -1, [0, 2**70], [0, 99]):
            with pytest.raises(InputError):
                ex.explain(X, method, target=target)
        for shape in ((1, 3, 0, 16), (1, 3, 16, 0), (1, 0, 16, 16)):
            with pytest.raises(InputError):
                ex.explain(np.zeros(shape, np.float32), method)


def test_bad_explainer_batch_size(torch):
    for bs in (-1, 0, 2.5, "4", True):
        with pytest.raises(OptionError, match="batch_size"):
            Explainer.from_torch(make_cnn(torch), "conv2", batch_size=bs)
