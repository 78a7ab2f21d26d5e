"""LIME's kernel width and ridge penalty against two independent references, on the same samples.

Our LIME draws its coalitions z (S, M) from ``numpy.random.default_rng(seed)`` (one draw of
``integers(0, 2, (S, M))`` per image, in image order, row 0 set to the whole image); the test
replays that draw, scores each coalition ``x * m + 0 * (1 - m)`` with ``ex.predict`` (the
explainer's ONNX Runtime float32 forward in one batch of S rows, as the method runs with
``batch_size=S``: the very scores the method regresses, to the bit; PyTorch's own ``model(x)``
differs from them by ~8 float32 ulps, which the regression would amplify into the 1e-6 bound -- the
scores are not what is tested here), and fits:

1. the closed form written here: pi(z) = sqrt(exp(-d^2 / w^2)), d = 1 - cos(z, 1) from
   scikit-learn's ``pairwise_distances(metric="cosine")`` (as ``lime_image`` computes it), and
   [b, beta] = (X' P X + alpha D)^-1 X' P v with X = [1, z], P = diag(pi), D = diag(0, 1, ..., 1)
   (the intercept unpenalised) -- the normal equations of the weighted ridge, not our centred form;
2. the ``lime`` package's own ``LimeBase.explain_instance_with_data`` with the image explainer's
   kernel and ``Ridge(alpha)`` (the regression ``lime_image`` runs).

The model is the seeded small CNN (ReLU, batch norm): its score is not linear in the segments, so
the fit leaves residuals and both the kernel width (which samples count) and alpha (how far the
coefficients shrink) change the result; the test checks that they do, by more than 100x the bound.

Captum's ``Lime`` is not a third reference: its default similarity is a distance between the
perturbed *images* (not the binary coalitions), a different definition from ``lime`` and ours.

Bound: the scores are the same float32 numbers in both, so what remains is float64 regression with
M + 1 = 10 unknowns whose normal matrix has condition < 1e3 here (checked below): 1e-6 relative to
the largest coefficient is > 1e3 times that rounding.
"""
from __future__ import annotations

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.methods.coalitions import grid_labels

SAMPLES, SEGMENTS, SIZE = 64, 9, 24  # a 24 px image in 9 cells, 64 coalitions: 2 images in < 1 s


def replay(ex, x, labels, seed):
    """Our sampling replayed: (z, v) per image, v the class-1 score of each coalition (zero baseline)."""
    rng = np.random.default_rng(seed)
    out = []
    for xi in x:
        z = rng.integers(0, 2, (SAMPLES, labels.max() + 1)).astype(np.float64)
        z[0] = 1.0
        m = z[:, labels].astype(np.float32)[:, None]
        v = ex.predict((xi[None] * m).astype(np.float32))[:, 1].astype(np.float64)
        out.append((z, v))
    return out


def closed_form(z, v, width, alpha):
    from sklearn.metrics import pairwise_distances

    d = pairwise_distances(z, z[0:1], metric="cosine").ravel()
    pi = np.sqrt(np.exp(-d ** 2 / width ** 2))
    X = np.hstack([np.ones((len(z), 1)), z])
    D = np.diag([0.0] + [1.0] * z.shape[1])
    normal = X.T @ (pi[:, None] * X) + alpha * D
    assert np.linalg.cond(normal) < 1e3  # the bound's premise (module docstring)
    return np.linalg.solve(normal, X.T @ (pi * v))[1:]


def lime_package(z, v, width, alpha):
    from lime.lime_base import LimeBase
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    d = pairwise_distances(z, z[0:1], metric="cosine").ravel()
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / width ** 2)), random_state=0)  # lime_image's kernel
    _, coef, _, _ = base.explain_instance_with_data(z, v[:, None], d, 0, z.shape[1], feature_selection="none",
                                                    model_regressor=Ridge(alpha=alpha, fit_intercept=True))
    return np.array([c for _, c in sorted(coef)])


SETTINGS = [(0.25, 1.0), (0.6, 0.1), (2.0, 5.0), (0.1, 0.5)]  # (kernel_width, alpha); the first is the default


@pytest.fixture(scope="module")
def runs(small_cnn, torch):
    x = np.random.default_rng(7).uniform(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    labels = grid_labels((SIZE, SIZE), SEGMENTS)
    ex = Explainer.from_torch(small_cnn, progress=False)
    ours = {s: ex.explain(x, "lime", target=1, segments=SEGMENTS, samples=SAMPLES, seed=5, kernel_width=s[0],
                          alpha=s[1], batch_size=SAMPLES).raw for s in SETTINGS}
    return ours, replay(ex, x, labels, 5), labels


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("reference", [closed_form, lime_package])
def test_lime_matches_reference_for_kernel_width_and_alpha(runs, setting, reference):
    ours, samples, labels = runs
    for i, (z, v) in enumerate(samples):
        want = reference(z, v, *setting)
        got = ours[setting][i]
        np.testing.assert_allclose(got, want[labels], rtol=0, atol=1e-6 * np.abs(want).max())


def test_kernel_width_and_alpha_change_the_result(runs):
    """The settings are not inert on this model: every pair differs by > 100x the bound above."""
    ours = runs[0]
    for a in SETTINGS:
        for b in SETTINGS:
            if a != b:
                gap = np.abs(ours[a] - ours[b]).max()
                assert gap > 1e-4 * max(np.abs(ours[a]).max(), np.abs(ours[b]).max()), (a, b, gap)
