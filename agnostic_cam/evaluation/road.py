"""ROAD: RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods"), as pytorch-grad-cam's ``metrics.road``.

At percentile p, the pixels whose map value is >= the p-th percentile (MoRF: most relevant first) or
whose value is <= the (100 - p)-th percentile (LeRF: least relevant first; the map is flipped,
``1 - map``) are removed and filled by noisy linear imputation: each removed pixel equals the
weighted mean of its 8 neighbours (weight 1/6 for the 4 direct, 1/12 for the 4 diagonal ones;
known neighbours enter as constants), one sparse linear system per image, solved for all channels,
plus Gaussian noise of std ``noise``. The score is the target's output after imputation minus before.
MoRF and LeRF are averaged over ``percentiles``; ``road(..., mode='combined')`` = (LeRF - MoRF) / 2
(higher is better). ``model`` as in :mod:`agnostic_cam.evaluation.metrics`; ``targets``: None (top-1), class
indices, or a callable / task target on the outputs. Maps (N, H, W) at input resolution.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.engine.threads import blas_one_thread
from agnostic_cam.core import layout as L
from agnostic_cam.errors import OptionError
from agnostic_cam.evaluation.metrics import _check, as_forward
from agnostic_cam.targets import TargetSpec, for_rows, select_scores

NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6), (-1, -1, 1 / 12),
              (1, 0, 1 / 6), (-1, 0, 1 / 6))
MODES = ("combined", "morf", "lerf")


def impute(image: np.ndarray, keep: np.ndarray, noise: float = 0.01, rng: np.random.Generator | None = None) -> np.ndarray:
    """Noisy linear imputation of one channel-first image (C, H, W) where ``keep`` (H, W) is False."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = image.shape
    flat = image.reshape(c, -1).astype(np.float64)
    known = keep.reshape(-1).astype(bool)
    unknown = np.flatnonzero(~known)
    if unknown.size == 0:
        return image.astype(np.float32)
    var = np.full(h * w, -1)
    var[unknown] = np.arange(unknown.size)
    y, x = np.divmod(unknown, w)
    rows, cols, vals = [], [], []
    diag = np.zeros(unknown.size)
    b = np.zeros((unknown.size, c))
    for dy, dx, wt in NEIGHBOURS:
        ny, nx = y + dy, x + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag[ok] += wt
        idx = np.flatnonzero(ok)
        q = ny[ok] * w + nx[ok]
        has = known[q]
        b[idx[has]] -= wt * flat[:, q[has]].T
        rows.append(idx[~has])
        cols.append(var[q[~has]])
        vals.append(np.full((~has).sum(), wt))
    rows.append(np.arange(unknown.size))
    cols.append(np.arange(unknown.size))
    vals.append(-diag)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(unknown.size, unknown.size)).tocsc()
    sol = np.asarray(spsolve(a, b)).reshape(unknown.size, c)
    out = flat.copy()
    out[:, unknown] = sol.T + (noise * (rng or np.random.default_rng()).standard_normal(sol.T.shape) if noise else 0)
    return out.reshape(c, h, w).astype(np.float32)


@blas_one_thread()  # small NumPy products between forward passes: see engine/threads.py
def road_scores(model, images, maps, targets=None, percentile: float = 80, order: str = "morf", layout: str = "NCHW",
                noise: float = 0.01, seed: int | None = 0, batch_size: int = 64) -> np.ndarray:
    """(N,) score after imputation minus before, at one ``percentile``, ``order`` 'morf' or 'lerf'."""
    if order not in ("morf", "lerf"):
        raise OptionError(f"order must be 'morf' or 'lerf'; got {order!r}")
    fwd = as_forward(model)
    x, m = _check(images, maps, layout)
    rng = np.random.default_rng(seed)
    chw = L.to_chw(x, layout)
    removed = np.empty_like(chw)
    for i in range(x.shape[0]):
        cam = m[i] if order == "morf" else 1 - m[i]
        keep = cam < np.percentile(cam, percentile)
        removed[i] = impute(chw[i], keep, noise, rng)
    run = lambda a: np.concatenate([fwd(a[k:k + batch_size]) for k in range(0, len(a), batch_size)])  # noqa: E731
    before, after = run(x), run(L.from_chw(removed, layout))
    spec = TargetSpec(targets, x.shape[0])
    classes = spec.indices(before)
    fn = for_rows(spec.fn, np.arange(x.shape[0]))
    return select_scores(after, classes, fn) - select_scores(before, classes, fn)


def road(model, images, maps, targets=None, percentiles=(10, 20, 30, 40, 50, 60, 70, 80, 90), mode: str = "combined",
         **kw) -> np.ndarray:
    """(N,) ROAD: MoRF or LeRF score changes averaged over ``percentiles``, or (LeRF - MoRF) / 2."""
    if mode not in MODES:
        raise OptionError(f"mode must be one of {MODES}; got {mode!r}")
    avg = {o: np.mean([road_scores(model, images, maps, targets, p, o, **kw) for p in percentiles], axis=0)
           for o in (("morf", "lerf") if mode == "combined" else (mode,))}
    return (avg["lerf"] - avg["morf"]) / 2 if mode == "combined" else avg[mode]
