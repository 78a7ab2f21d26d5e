"""The metric suite against Quantus 0.6.0 (a test-only reference) on the same model, inputs, maps and
perturbation draws, plus invariants that can be checked by hand.

Quantus runs the *same* model: the explainer's ONNX Runtime session wrapped as a torch module, so
both sides see identical scores; one test also runs Quantus on the torch model itself. Quantus draws
from NumPy's global generator; the tests replay its draws in the same order and pass them to ours
(``subsets=``, ``fills=``, ``noise=``), so the stochastic metrics compare exactly too.
"""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import quantus  # test-only reference (requirements-dev.txt)

from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.evaluation import complexity as cx  # noqa: E402
from agnostic_cam.evaluation import faithfulness as F  # noqa: E402
from agnostic_cam.evaluation import faithfulness_regions as FR  # noqa: E402
from agnostic_cam.evaluation import localisation as loc  # noqa: E402
from agnostic_cam.evaluation import metrics, randomisation, robustness  # noqa: E402

H = W = 12  # Quantus wants C x pixels_in_step to divide H x W
N = 3


def cnn(c_in: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c_in, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


class OnOrt(nn.Module):
    """The explainer's ONNX Runtime session as a torch module: Quantus scores the very same model."""

    def __init__(self, ex):
        super().__init__()
        self.ex = ex
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.from_numpy(np.asarray(self.ex.predict(x.detach().cpu().numpy().astype(np.float32))))


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    out = {}
    for c in (3, 1):
        model = cnn(c)
        ex = Explainer.from_torch(model, "3", input_shape=(c, H, W), progress=False)
        x = rng.uniform(0, 1, (N, c, H, W)).astype(np.float32)
        out[c] = (model, ex, OnOrt(ex).eval(), x, ex.predict(x).argmax(1))
    maps = rng.uniform(0, 1, (N, H, W)).astype(np.float32)
    masks = np.zeros((N, H, W), bool)
    for i, (y0, x0) in enumerate([(2, 3), (5, 5), (6, 1)]):
        masks[i, y0:y0 + 6, x0:x0 + 7] = True
    return out, maps, masks


def q(metric, model, x, y, a, s=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a[:, None], s_batch=None if s is None else s[:, None],
                                 channel_first=True, device="cpu", **kw), np.float64)


QUIET = dict(disable_warnings=True, display_progressbar=False)


def test_localisation_equals_quantus(setup):
    (out, maps, masks) = setup
    _, _, qm, x, y = out[3]
    cases = [(quantus.PointingGame(normalise=False, **QUIET), lambda: metrics.pointing_game(maps, masks)),
             (quantus.AttributionLocalisation(normalise=False, **QUIET), lambda: loc.attribution_localisation(maps, masks)),
             (quantus.TopKIntersection(k=20, normalise=False, **QUIET), lambda: loc.top_k_intersection(maps, masks, k=20)),
             (quantus.TopKIntersection(k=20, concept_influence=True, normalise=False, **QUIET),
              lambda: loc.top_k_intersection(maps, masks, k=20, concept_influence=True)),
             (quantus.RelevanceMassAccuracy(normalise=False, **QUIET), lambda: loc.relevance_mass_accuracy(maps, masks)),
             (quantus.RelevanceRankAccuracy(normalise=False, **QUIET), lambda: loc.relevance_rank_accuracy(maps, masks)),
             (quantus.AUC(normalise=False, **QUIET), lambda: loc.auc(maps, masks))]
    for metric, ours in cases:
        np.testing.assert_allclose(ours(), q(metric, qm, x, y, maps, masks), rtol=0, atol=1e-6, err_msg=type(metric).__name__)


def test_complexity_equals_quantus(setup):
    (out, maps, _) = setup
    _, _, qm, x, y = out[3]
    small = maps * 1e-4  # effective complexity counts values above eps = 1e-5
    for metric, ours, a in [(quantus.Sparseness(normalise=False, **QUIET), cx.sparseness, maps),
                            (quantus.Complexity(normalise=False, **QUIET), cx.complexity, maps),
                            (quantus.EffectiveComplexity(normalise=False, **QUIET), cx.effective_complexity, small)]:
        np.testing.assert_allclose(ours(a), q(metric, qm, x, y, a.copy()), rtol=0, atol=1e-6, err_msg=type(metric).__name__)


def test_localisation_invariants():
    maps = np.zeros((2, 8, 8), np.float32)
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 2:5, 2:6] = True
    maps[0][masks[0]] = np.linspace(0.2, 1, masks[0].sum())     # only inside the object
    maps[1][~masks[1]] = np.linspace(0.2, 1, (~masks[1]).sum())  # only outside
    for f in (loc.energy_based_pointing_game, loc.attribution_localisation, loc.relevance_mass_accuracy,
              loc.relevance_rank_accuracy, lambda a, s: loc.top_k_intersection(a, s, k=5), loc.auc):
        np.testing.assert_allclose(f(maps, masks), [1.0, 0.0], atol=1e-9)
    np.testing.assert_array_equal(metrics.pointing_game(maps, masks), [True, False])
    boxes = [(2, 2, 5, 6), [(2, 2, 5, 6)]]
    np.testing.assert_array_equal(loc.boxes_to_masks(boxes, (2, 8, 8)), masks)
    assert np.isnan(loc.relevance_mass_accuracy(maps, np.zeros_like(masks))).all()
    # a uniform map: sparseness 0 (up to the 1e-7 offset), complexity log(H*W), every pixel counts
    flat = np.ones((1, 8, 8))
    np.testing.assert_allclose(cx.sparseness(flat), [0.0], atol=1e-9)
    np.testing.assert_allclose(cx.complexity(flat), [np.log(64)], rtol=1e-9)
    one = np.zeros((1, 8, 8))
    one[0, 3, 3] = 1
    np.testing.assert_allclose(cx.sparseness(one), [63 / 64], atol=1e-5)  # the 1e-7 offset
    assert cx.effective_complexity(one)[0] == 1 and cx.complexity(one)[0] < 1e-9


def test_faithfulness_deterministic_equal_quantus(setup):
    (out, maps, _) = setup
    _, ex, qm, x, y = out[3]
    c = x.shape[1]  # Quantus counts channel elements: features_in_step = C x pixels_in_step
    step = 8
    est = q(quantus.FaithfulnessEstimate(features_in_step=c * step, normalise=False, **QUIET), qm, x, y, maps)
    np.testing.assert_allclose(F.faithfulness_estimate(ex, x, maps, y, pixels_in_step=step), est, atol=1e-6)
    pf = q(quantus.PixelFlipping(features_in_step=c * step, normalise=False, **QUIET), qm, x, y, maps)
    np.testing.assert_allclose(F.pixel_flipping_curve(ex, x, maps, y, pixels_in_step=step), pf, atol=1e-6)
    np.testing.assert_allclose(F.pixel_flipping(ex, x, maps, y, pixels_in_step=step), np.trapezoid(pf, axis=1), atol=1e-6)
    for patch in (4, 5):  # 5 does not divide 12: Quantus pads, we cut the border patches
        for order in ("morf", "lerf"):
            rp = q(quantus.RegionPerturbation(patch_size=patch, order=order, regions_evaluation=6, normalise=False, **QUIET),
                   qm, x, y, maps)
            ours = F.region_perturbation_curve(ex, x, maps, y, patch_size=patch, order=order, regions_evaluation=6)
            np.testing.assert_allclose(ours, rp, atol=1e-6, err_msg=f"{patch} {order}")
    aopc = F.region_perturbation(ex, x, maps, y, patch_size=4, regions_evaluation=6)
    np.testing.assert_allclose(aopc, F.region_perturbation_curve(ex, x, maps, y, patch_size=4, regions_evaluation=6).sum(1) / 7)
    inf = q(quantus.Infidelity(perturb_patch_sizes=[4, 6], n_perturb_samples=1, normalise=False, **QUIET), qm, x, y, maps)
    np.testing.assert_allclose(FR.infidelity(ex, x, maps, y, patch_sizes=(4, 6)), inf, rtol=1e-6, atol=1e-6)
    suf = q(quantus.Sufficiency(threshold=0.6, normalise=False, **QUIET), qm, x, y, maps)
    np.testing.assert_allclose(FR.sufficiency(ex, x, maps, threshold=0.6), suf, atol=1e-6)


def test_irof_equals_quantus_on_its_superpixels(setup, monkeypatch):
    # Quantus 0.6.0 calls np.trapz, which NumPy 2.4 renamed np.trapezoid: give the reference its old name
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    (out, maps, _) = setup
    _, ex, qm, x, y = out[1]  # Quantus 0.6.0's IROF masks (N, 1, H, W) fit one-channel images only
    seg = FR.slic_segments(x)
    for i in range(N):  # one image per call: Quantus pads the curves of a batch to its longest
        ref = q(quantus.IROF(perturb_baseline=0.0, return_aggregate=False, normalise=False, **QUIET),
                qm, x[i:i + 1], y[i:i + 1], maps[i:i + 1], softmax=False)  # logits: torch's float32 softmax
        ours = FR.irof(ex, x[i:i + 1], maps[i:i + 1], y[i:i + 1], segments=seg[i:i + 1], baseline=0.0, score="raw")
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_faithfulness_stochastic_equal_quantus_given_its_draws(setup):
    (out, maps, _) = setup
    _, ex, qm, x, y = out[1]  # one channel: Quantus draws pixel subsets over channel elements
    runs, k = 12, 40
    np.random.seed(11)
    subsets = []
    for _ in range(runs):  # Quantus: one subset per image, then the baseline dict draws uniform(size=N)
        subsets.append([np.random.choice(H * W, k, replace=False) for _ in range(N)])
        np.random.uniform(size=N)
    np.random.seed(11)
    ref = q(quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=k, return_aggregate=False, normalise=False, **QUIET),
            qm, x, y, maps)
    np.testing.assert_allclose(F.faithfulness_correlation(ex, x, maps, y, subsets=np.array(subsets)), ref, atol=1e-6)

    step, samples = 24, 3
    steps = H * W // step
    np.random.seed(5)
    fills = np.array([[np.random.uniform(size=N) for _ in range(samples)] for _ in range(steps)])
    np.random.seed(5)
    ref = q(quantus.MonotonicityCorrelation(features_in_step=step, nr_samples=samples, normalise=False, **QUIET),
            qm, x, y, maps, softmax=False)  # logits: torch's float32 softmax could swap two close ranks
    ours = F.monotonicity_correlation(ex, x, maps, y, pixels_in_step=step, nr_samples=samples, fills=fills, score="raw")
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def explain_func(ex):
    def fn(model, inputs, targets, **kw):
        return ex.explain(np.asarray(inputs, np.float32), "gradcam", target=[int(t) for t in targets]).heatmap[:, None]
    return fn


def test_robustness_equals_quantus_given_its_noise(setup):
    (out, maps, _) = setup
    _, ex, qm, x, y = out[3]
    a = ex.explain(x, "gradcam", target=list(y)).heatmap
    s = 4
    np.random.seed(2)
    uni = np.stack([np.random.uniform(-0.2, 0.2, size=(N, x[0].size)).reshape(x.shape) for _ in range(s)])
    for metric, ours in [(quantus.MaxSensitivity, robustness.max_sensitivity), (quantus.AvgSensitivity, robustness.avg_sensitivity)]:
        np.random.seed(2)
        ref = q(metric(nr_samples=s, lower_bound=0.2, normalise=False, **QUIET), qm, x, y, a, explain_func=explain_func(ex))
        np.testing.assert_allclose(ours(ex, x, a, "gradcam", y, noise=uni), ref, rtol=1e-5, atol=1e-6, err_msg=metric.__name__)
    np.random.seed(4)
    gau = np.stack([np.random.normal(0.0, 0.1, size=(N, x[0].size)).reshape(x.shape) for _ in range(s)])
    np.random.seed(4)
    ref = q(quantus.LocalLipschitzEstimate(nr_samples=s, perturb_std=0.1, normalise=False, **QUIET), qm, x, y, a,
            explain_func=explain_func(ex))
    np.testing.assert_allclose(robustness.local_lipschitz_estimate(ex, x, a, "gradcam", y, noise=gau), ref, rtol=1e-5, atol=1e-6)
    # the noisy copies go through one explain call per `rows` copies (default 64); the grouping never
    # changes the scores: one draw per call (rows=1) and a last, partial group (3 draws per call of 4)
    grouped = robustness.max_sensitivity(ex, x, a, "gradcam", y, noise=uni)
    for rows in (1, 3 * N):
        np.testing.assert_allclose(robustness.max_sensitivity(ex, x, a, "gradcam", y, noise=uni, rows=rows), grouped,
                                   rtol=1e-5, atol=1e-6)
    # seeded draws of our own: the same seed gives the same numbers, and no noise gives 0
    r1 = robustness.max_sensitivity(ex, x, a, "gradcam", y, nr_samples=2, rng=np.random.default_rng(0))
    r2 = robustness.max_sensitivity(ex, x, a, "gradcam", y, nr_samples=2, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(robustness.avg_sensitivity(ex, x, a, "gradcam", y, noise=np.zeros((1, *x.shape))), 0, atol=1e-7)


def test_random_logit_equals_quantus(setup):
    (out, _, _) = setup
    _, ex, qm, x, y = out[3]
    a = ex.explain(x, "gradcam", target=list(y)).heatmap
    np.random.seed(42)  # Quantus: seed, then an index among the other K - 1 classes per image
    idx = np.random.randint(0, 4, N)
    off = idx + (idx >= y)
    sim = quantus.functions.similarity_func.ssim
    ref = q(quantus.RandomLogit(num_classes=5, seed=42, normalise=False, **QUIET), qm, x, y, a, explain_func=explain_func(ex))
    ours = randomisation.random_logit(ex, x, a, "gradcam", y, off_targets=off,
                                      similarity=lambda u, v: sim(u.ravel()[None], v.ravel()[None], batched=True)[0])
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # our default: its own draw of other classes, 2-D SSIM; identical maps would score 1
    default = randomisation.random_logit(ex, x, a, "gradcam", y, rng=0)
    assert default.shape == (N,) and np.all(default <= 1 + 1e-9)


def test_quantus_on_the_torch_model_agrees(setup):
    """Quantus on the torch model itself (not the ONNX session): equal up to float32 round-off."""
    (out, maps, _) = setup
    model, ex, _, x, y = out[3]
    ref = q(quantus.FaithfulnessEstimate(features_in_step=3 * 16, normalise=False, **QUIET), model, x, y, maps)
    np.testing.assert_allclose(F.faithfulness_estimate(ex, x, maps, y, pixels_in_step=16), ref, atol=1e-4)


def test_smooth_mprt_reduces_to_mprt_and_is_seeded(setup):
    (out, _, _) = setup
    _, ex, _, x, y = out[3]
    from agnostic_cam.evaluation.sanity import model_randomization

    one = randomisation.smooth_mprt(ex, x, "gradcam", nr_samples=1, steps=1, seed=1)
    plain = model_randomization(ex, x, "gradcam", steps=1, seed=1)
    np.testing.assert_allclose(one.spearman, plain.spearman, atol=1e-6)  # one clean sample: plain MPRT
    a = randomisation.smooth_mprt(ex, x, "gradcam", nr_samples=2, steps=1, seed=1, rng=7)
    b = randomisation.smooth_mprt(ex, x, "gradcam", nr_samples=2, steps=1, seed=1, rng=7)
    np.testing.assert_array_equal(a.spearman, b.spearman)
    assert a.spearman.shape == (1, N) and not np.allclose(a.maps, one.maps)  # the noise changes the maps
