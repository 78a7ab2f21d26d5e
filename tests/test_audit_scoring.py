"""The audit's fused scoring equals agnostic_cam.evaluation.metrics (the reference definitions) image by image.

Reduced: a NumPy model (a fixed random linear map of the pixels, 4 classes), 3 images of 12x10 px.
"""
import numpy as np
import pytest

from agnostic_cam.evaluation import metrics
from agnostic_cam.audit.scoring import score_maps


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("score", ["softmax", "raw"])
def test_fused_scores_equal_metrics(layout, score):
    rng = np.random.default_rng(0)
    shape = (3, 3, 12, 10) if layout == "NCHW" else (3, 12, 10, 3)
    x = rng.random(shape, dtype=np.float32)
    wts = rng.normal(size=(int(np.prod(shape[1:])), 4)).astype(np.float32) / 20

    def model(b):
        z = b.reshape(b.shape[0], -1) @ wts
        return metrics.softmax(z) if score == "raw" else z   # 'raw': the model outputs probabilities

    heats = {m: rng.random((3, 12, 10), dtype=np.float32) for m in ("a", "b")}
    heats["b"][1] = 0.5                                         # a flat map: ties broken by position
    out = model(x)
    ks = np.array([0, 3, 1])
    got = score_maps(model, x, out, heats, ks, steps=5, layout=layout, score=score, chunk=7)
    for m, heat in heats.items():
        kw = {"steps": 5, "layout": layout, "score": score, "progress": False}
        np.testing.assert_allclose(got[m]["deletion_auc"], metrics.deletion_auc(model, x, heat, ks, **kw), atol=1e-7)
        np.testing.assert_allclose(got[m]["insertion_auc"], metrics.insertion_auc(model, x, heat, ks, **kw), atol=1e-7)
        cc = metrics.confidence_change(model, x, heat, ks, layout=layout, score=score)
        np.testing.assert_allclose(got[m]["drop"], cc["drop"], atol=1e-7)
        np.testing.assert_array_equal(got[m]["increase"], cc["increase"])
