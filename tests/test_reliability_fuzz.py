"""Randomized fuzz of ``Explainer.explain`` (issue #11): seeded, a fixed number of cases.

Every call gets random images (shapes, layouts, dtypes, NaN/Inf, huge values), a random target
(ints in and out of range, 2**70, lists, callables, NaN callables, junk) and random options
(valid and invalid batch sizes, counts, noise, baselines, unknown names) for one of 16
methods. Every outcome must be either a correct result or an AgnosticCamError:
- a result has a finite float32 (N, H, W) heatmap in [0, 1], and for deterministic methods equals
  the result of the same call without ``batch_size`` (batching never changes a map);
- anything else that escapes is a bug (the test prints the seed and the case to replay it).
The model must be unchanged at the end. Reduced for speed: a 3-layer CNN, 8-20 px images.
"""
from __future__ import annotations

import numpy as np
import pytest

from agnostic_cam import Explainer, registry
from agnostic_cam.errors import AgnosticCamError
from test_reliability_model import assert_state, make_cnn, state

SEED = 20261202
CASES = 60  # fixed (was: as many as 30 s allowed, so a loaded machine ran other cases than a quiet one)
# Every kind of method (CAMs on gradients, forward-only CAMs, the tail, pixel gradients, noise and
# path integrals); the slowest CAM variants are left to their own tests so no case takes minutes.
METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam", "ablationcam", "cam",
           "saliency", "guided_backprop", "deconvnet", "gradient_x_input", "integrated_gradients", "smoothgrad",
           "guided_gradcam"]
DETERMINISTIC = {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam",
                 "saliency", "guided_backprop", "deconvnet", "gradient_x_input", "integrated_gradients",
                 "guided_gradcam", "smoothgrad"}


def _pick(rng, good: list, bad: list, p_bad: float = 0.15):
    pool = bad if bad and rng.random() < p_bad else good
    return pool[int(rng.integers(len(pool)))]


def _images(rng):
    n = int(rng.integers(1, 4))
    h, w = (int(v) for v in rng.choice([8, 12, 16, 20], size=2))
    kind = _pick(rng, ["ok"], ["nhwc", "rank3", "zero", "chan4", "nan", "inf", "huge", "const", "empty"], 0.25)
    shape = {"nhwc": (n, h, w, 3), "rank3": (3, h, w), "zero": (n, 3, 0, w), "chan4": (n, 4, h, w),
             "empty": (0, 3, h, w)}.get(kind, (n, 3, h, w))
    x = rng.normal(size=shape)
    if kind == "nan" and x.size:
        x.flat[int(rng.integers(x.size))] = np.nan
    elif kind == "inf" and x.size:
        x.flat[int(rng.integers(x.size))] = -np.inf
    elif kind == "huge":
        x = x * 1e30
    elif kind == "const":
        x = np.zeros(shape)
    dtype = _pick(rng, ["float32", "float64", "float16"], ["uint8", "int32"], 0.1)
    if dtype not in ("float32", "float64", "float16"):
        return np.abs(np.nan_to_num(x, posinf=0, neginf=0) * 50).clip(0, 255).astype(dtype), kind
    return x.astype(dtype), kind


def _target(rng, n):
    good = [lambda: None, lambda: int(rng.integers(0, 5)), lambda: [int(v) for v in rng.integers(0, 5, size=n)],
            lambda: np.arange(n) % 5, lambda: (lambda out: out[:, 0] - out[:, 1])]
    bad = [lambda: -1, lambda: 5, lambda: 2**70, lambda: list(range(n + 1)), lambda: "cat", lambda: 1.5,
           lambda: True, lambda: (lambda out: out[:, 0] * float("nan"))]
    return _pick(rng, good, bad, 0.2)()


def _options(rng, method: str, shape):
    import inspect

    takes = set(inspect.signature(registry()[method].__init__).parameters) | {"batch_size"}
    pool = {
        "batch_size": ([None, 1, 2, 3, 10**6], [-1, 0, 2.5, "2", True]),
        "samples": ([1, 2, 3], [0, -3, 1.5]),
        "steps": ([2, 3, 4], [0, -1, 2.5]),
        "noise": ([0.0, 0.1, 1.0], [-0.5, float("inf"), float("nan")]),
        "seed": ([0, 7], [-1]),
        "baseline": ([0.0, 0.5] + ([np.zeros(shape[1:], np.float32)] if len(shape) == 4 else []), [float("nan")]),
        "not_an_option": ([], [1]),
    }
    out = {}
    for name, (good, bad) in pool.items():
        if (name in takes and rng.random() < 0.5) or rng.random() < 0.03:
            v = _pick(rng, good, bad, 0.15) if good else bad[0]
            out[name] = v
    return out


def _check_result(exp, x):
    n, hw = x.shape[0], x.shape[2:4]
    heat = exp.heatmap
    assert heat.shape == (n, *hw) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1 + 1e-6


def test_fuzz_explain(torch):
    m = make_cnn(torch, seed=3).train()
    before = state(m)
    ex = Explainer.from_torch(m, "conv2", progress=False)
    rng = np.random.default_rng(SEED)
    methods = [m for m in METHODS if m in registry()]
    cases, outcomes = 0, {"result": 0, "error": 0}
    while cases < CASES:
        x, kind = _images(rng)
        method = methods[int(rng.integers(len(methods)))]
        target = _target(rng, x.shape[0] if x.ndim else 1)
        options = _options(rng, method, x.shape)
        case = f"seed={SEED} case={cases} method={method!r} images={kind} {x.shape} {x.dtype} target={target!r} " \
               f"options={ {k: v for k, v in options.items() if k != 'baseline'} }"
        cases += 1
        try:
            exp = ex.explain(x, method, target=target, **options)
        except AgnosticCamError:
            outcomes["error"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - an untyped error is the bug this test looks for
            pytest.fail(f"untyped {type(e).__name__}: {e}\n  {case}")
        outcomes["result"] += 1
        _check_result(exp, x)
        if method in DETERMINISTIC and options.get("batch_size") is not None:
            ref = ex.explain(x, method, target=target, **{k: v for k, v in options.items() if k != "batch_size"})
            np.testing.assert_allclose(exp.heatmap, ref.heatmap, atol=1e-4, err_msg=case)
    print(f"fuzz: {cases} cases, {outcomes}")
    assert outcomes["result"] > 0 and outcomes["error"] > 0, outcomes   # both kinds of outcome were exercised
    assert_state(before, m)
