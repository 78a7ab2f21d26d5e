"""The audit's faithfulness metrics for several images and methods in shared ONNX Runtime calls.

Same definitions and values as :mod:`agnostic_cam.evaluation.metrics` (deletion/insertion AUC, average drop,
increase in confidence), computed with fewer forward passes:

- every perturbed image of every method and image goes through one stream of ``chunk``-row calls;
- rows known in advance are not run again: step 0 of deletion and the last step of insertion are
  the image itself (its score comes from ``outputs``), the last deletion step is the all-zero
  image (one row for the batch), the first insertion step is the blurred image (one row per image,
  shared by every method);
- the confidence change reuses ``outputs`` for Y and runs only ``image * map``.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.evaluation import metrics
def _probs(out: np.ndarray, classes: np.ndarray, score: str) -> np.ndarray:
    return metrics._score(out, classes, score)


def score_maps(model, x: np.ndarray, outputs: np.ndarray, heats: dict[str, np.ndarray], classes: np.ndarray,
               steps: int, layout: str, score: str, chunk: int = 64) -> dict[str, dict[str, np.ndarray]]:
    """Per method: ``deletion_auc``, ``insertion_auc``, ``drop``, ``increase`` (each (N,)) of ``heats``
    (method -> (N, H, W)) for images ``x`` (N, ...) whose model outputs are ``outputs`` (N, K)."""
    fwd = metrics.as_forward(model)
    n = x.shape[0]
    h, w = heats[next(iter(heats))].shape[1:]
    classes = np.asarray(classes, np.int64)
    y = _probs(outputs, classes, score)
    blurred = metrics.blur(x, layout)
    zero_out = fwd(np.zeros_like(x[:1]))
    y_zero = _probs(np.repeat(zero_out, n, axis=0), classes, score)
    counts = np.ceil(np.arange(steps + 1) * (h * w) / steps).astype(np.int64)
    ranks = {}
    for m, heat in heats.items():
        order = np.argsort(-heat.reshape(n, -1), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(h * w)[None].repeat(n, 0), axis=1)
        ranks[m] = rank
    res = {m: {"deletion": np.empty((n, steps + 1)), "insertion": np.empty((n, steps + 1)), "masked": np.empty(n)}
           for m in heats}
    # rows: ("blur", None, i, 0), ("masked", m, i, 0), (mode, m, i, k) for the inner steps
    rows = [("blur", None, i, 0) for i in range(n)]
    rows += [("masked", m, i, 0) for m in heats for i in range(n)]
    rows += [(mode, m, i, k) for m in heats for i in range(n) for mode in ("deletion", "insertion")
             for k in range(1, steps)]
    blur_scores = np.empty(n)
    for lo in range(0, len(rows), chunk):
        part = rows[lo:lo + chunk]
        batch = np.empty((len(part), *x.shape[1:]), np.float32)
        for j, (kind, m, i, k) in enumerate(part):
            if kind == "blur":
                batch[j] = blurred[i]
            elif kind == "masked":
                hm = heats[m][i]
                batch[j] = x[i] * (hm[None] if layout == "NCHW" else hm[..., None])
            else:
                moved = (ranks[m][i] < counts[k]).reshape(h, w)
                moved = moved[None] if layout == "NCHW" else moved[..., None]
                batch[j] = np.where(moved, 0.0, x[i]) if kind == "deletion" else np.where(moved, x[i], blurred[i])
        s = _probs(fwd(batch), classes[[r[2] for r in part]], score)
        for (kind, m, i, k), v in zip(part, s):
            if kind == "blur":
                blur_scores[i] = v
            elif kind == "masked":
                res[m]["masked"][i] = v
            else:
                res[m][kind][i, k] = v
    out = {}
    for m, r in res.items():
        r["deletion"][:, 0], r["deletion"][:, steps] = y, y_zero
        r["insertion"][:, 0], r["insertion"][:, steps] = blur_scores, y
        auc = {mode: (r[mode][:, 1:] + r[mode][:, :-1]).sum(axis=1) / 2 / steps for mode in ("deletion", "insertion")}
        o = r["masked"]
        out[m] = {"deletion_auc": auc["deletion"], "insertion_auc": auc["insertion"],
                  "drop": np.where(y > 0, np.maximum(0.0, y - o) / np.maximum(y, 1e-300), np.nan),  # undefined at Y=0
                  "increase": (o > y).astype(np.float64)}
    return out
