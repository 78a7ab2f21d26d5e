"""ROAD (Rong et al. 2022) against pytorch-grad-cam 1.5.7's metrics.road, noise off (its imputer's
noise is unseeded), on a small CNN at 24 px with two images and three percentiles."""
import numpy as np

from agnostic_cam import Explainer
from agnostic_cam.evaluation.road import impute, road


def test_imputation_equals_pytorch_grad_cam(torch):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 12, 10)).astype(np.float32)
    keep = rng.uniform(size=(12, 10)) > 0.4
    keep[0, :] = False  # removed pixels on the border too
    ref = NoisyLinearImputer(noise=0.0)(torch.from_numpy(img), torch.from_numpy(keep.astype(np.float32))).numpy()
    np.testing.assert_allclose(impute(img, keep, noise=0.0), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(impute(img, keep, noise=0.0)[:, keep], img[:, keep])


def test_road_combined_equals_pytorch_grad_cam(torch, small_cnn):
    from pytorch_grad_cam.metrics.perturbation_confidence import (PerturbationConfidenceMetric,
                                                                  RemoveLeastRelevantFirst, RemoveMostRelevantFirst)
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = np.random.default_rng(1).normal(size=(2, 3, 24, 24)).astype(np.float32)
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    maps = ex.explain(x, "gradcam", target=[1, 3]).heatmap
    pct = (20, 50, 80)
    ours = road(ex, x, maps, targets=[1, 3], percentiles=pct, noise=0.0)
    tg = [ClassifierOutputTarget(1), ClassifierOutputTarget(3)]
    xt = torch.from_numpy(x)

    def avg(cls):
        return np.mean([PerturbationConfidenceMetric(cls(p, NoisyLinearImputer(noise=0.0)))(xt, maps, tg, small_cnn)
                        for p in pct], axis=0)

    ref = (avg(RemoveLeastRelevantFirst) - avg(RemoveMostRelevantFirst)) / 2
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
