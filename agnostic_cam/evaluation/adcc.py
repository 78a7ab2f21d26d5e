"""ADCC: Average Drop, Coherency and Complexity in one number (Poppi et al. 2021, "Revisiting The
Evaluation of Class Activation Mapping for Explainability: A Novel Metric and Experimental
Analysis", CVPR-W 2021, Sec. 3; the metric OpenVINO XAI ships). **Higher is better**, in [0, 1].

Per image, with map E(x) in [0, 1] (N, H, W), x' = x . E(x) (the image multiplied by its map; no
other baseline), Y and O the target's probability on x and on x':

    average drop   AD  = max(0, Y - O) / Y                                   lower is better
    coherency      Coh = (Pearson(E(x), E(x')) + 1) / 2, E(x') the same method's map of x' for
                         the same target                                     higher is better
    complexity     Com = ||E(x)||_1 / (H W)                                   lower is better
    ADCC               = 3 / (1 / Coh + 1 / (1 - Com) + 1 / (1 - AD))        (harmonic mean)

Cost: two forward passes and one explanation per image. A flat E(x') has no correlation: its
coherency and ADCC are NaN. OpenVINO XAI's ``ADCC.evaluate`` averages AD, Coh and Com over the
images first and returns one ADCC for the set; :func:`adcc` returns one per image, and
:func:`adcc_parts` gives the three parts so the set-level number is ``combine(*means)``.
"""
from __future__ import annotations

import warnings

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.core.degenerate import DegenerateMapWarning
from agnostic_cam.errors import InputError
from agnostic_cam.evaluation import perturb as P
from agnostic_cam.evaluation.metrics import _score, as_forward


def combine(coherency, complexity, average_drop) -> np.ndarray:
    """ADCC = 3 / (1 / Coh + 1 / (1 - Com) + 1 / (1 - AD)) (0 where a part is at its worst)."""
    coh, com, ad = (np.asarray(v, np.float64) for v in (coherency, complexity, average_drop))
    with np.errstate(divide="ignore"):
        return 3 / (1 / coh + 1 / (1 - com) + 1 / (1 - ad))


def adcc_parts(explainer, images, maps, method: str = "gradcam", targets=None, score: str = "softmax",
               batch_size: int = 64, **options) -> dict[str, np.ndarray]:
    """{"adcc", "coherency", "complexity", "average_drop"}, each (N,), for ``maps`` (N, H, W) in [0, 1]
    made by ``method`` (with ``options``) of ``explainer``; ``targets`` None: each image's top-1 class."""
    x, layout, hw = P.check_images(explainer._inputs(images), explainer.adapter.layout)
    m = P.check_maps(maps, x.shape[0], hw)
    if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise InputError("ADCC needs maps in [0, 1] (E(x) multiplies the image): pass Explanation.heatmap")
    fwd = as_forward(explainer)
    out = np.concatenate([fwd(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    t = out.argmax(1) if targets is None else np.broadcast_to(np.asarray(targets, np.int64), (len(x),)).copy()
    masked = (x * L.expand_mask(m.astype(np.float32), layout)).astype(np.float32)
    out_m = np.concatenate([fwd(masked[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    y, o = _score(out, t, score), _score(out_m, t, score)
    ad = np.maximum(0.0, y - o) / y
    with warnings.catch_warnings():  # a flat map of x' is reported as NaN coherency below
        warnings.simplefilter("ignore", DegenerateMapWarning)
        again = np.asarray(explainer.explain(masked, method, target=[int(v) for v in t], **options).heatmap, np.float64)
    coh = (P.pearson_rows(m.reshape(len(x), -1), again.reshape(len(x), -1)) + 1) / 2
    com = m.reshape(len(x), -1).mean(1)
    return {"adcc": combine(coh, com, ad), "coherency": coh, "complexity": com, "average_drop": ad}


def adcc(explainer, images, maps, method: str = "gradcam", targets=None, score: str = "softmax",
         batch_size: int = 64, **options) -> np.ndarray:
    """(N,) ADCC per image (Poppi et al. 2021); **higher is better**. See :func:`adcc_parts`."""
    return adcc_parts(explainer, images, maps, method, targets, score, batch_size, **options)["adcc"]
