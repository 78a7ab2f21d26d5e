"""Degenerate maps: flagged, never hidden.

Min-max normalisation turns any map into a full-contrast picture, also one whose variation is
pure float rounding (Eigen-CAM of near-constant activations: projections of 1e-14) or one that is
constant (an all-zero Ablation-CAM). Such a map carries no spatial information. Every explanation
is checked per image; a degenerate map is returned as computed, with ``Explanation.degenerate``
(N,) bool and ``Explanation.degenerate_reason`` (N,) str ("" when the map is fine), and
``explain`` emits one :class:`DegenerateMapWarning` per call.

The rule (per image, on the raw map r and its heatmap):

- r is constant (max(r) == min(r)), or the heatmap is constant (e.g. a CAM negative everywhere,
  whose ReLU is zero), or
- ``max(r) - min(r) <= K * eps32 * scale`` with ``K = 16``, ``eps32 = 2**-23`` (float32 machine
  epsilon) and ``scale`` the magnitude of the terms that formed r, the size rounding errors are
  proportional to. A method states it by setting ``self.scale`` (N,) in ``compute``: CAMs
  ``sum_c w_c A_c`` use ``max over positions of sum_c |w_c| |A_c|`` (:class:`CamMethod`), Eigen-CAM
  the un-centred activations projected with absolute values, Ablation-CAM the scores its weights are
  differences of. Without one, ``scale = max |r|`` (the map is constant up to rounding).
"""
from __future__ import annotations

import warnings

import numpy as np

K = 16
EPS32 = float(np.finfo(np.float32).eps)


class DegenerateMapWarning(UserWarning):
    """Some maps of an explanation are constant or at rounding-noise level (see Explanation.degenerate)."""


def reasons(raw: np.ndarray, heatmap: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """(N,) object array: why each image's map is degenerate, or "" when it is not.

    raw: (N, ...) the method's map before normalisation; heatmap: (N, H, W); scale: (N,) magnitude
    of the terms that formed each raw map (None: max |raw|).
    """
    n = raw.shape[0]
    out = np.full(n, "", dtype=object)
    r = np.asarray(raw, dtype=np.float64).reshape(n, -1)
    hm = np.asarray(heatmap, dtype=np.float64).reshape(n, -1)
    for i in range(n):
        ri = r[i]
        if not np.isfinite(ri).all():
            continue  # non-finite values are another error's business
        lo, hi = ri.min(), ri.max()
        mag = float(np.abs(ri).max()) if scale is None else float(scale[i])
        if hi == lo:
            out[i] = f"constant map (every value is {hi + 0.0:.3g})"
        elif not np.isfinite(mag):
            continue
        elif hi - lo <= K * EPS32 * mag:
            out[i] = (f"rounding noise: the map's range {hi - lo:.2g} is {(hi - lo) / mag:.1e} of the magnitude "
                      f"{mag:.2g} of the terms that formed it (threshold {K} float32 eps)")
        elif hm[i].max() == hm[i].min():
            out[i] = f"constant heatmap (every value is {hm[i].max():.3g}): nothing positive to show"
    return out


def mark(exp, scale: np.ndarray | None = None):
    """Set ``exp.degenerate`` and ``exp.degenerate_reason`` from its raw map and heatmap; returns exp."""
    why = reasons(exp.raw, exp.heatmap, scale)
    exp.degenerate_reason = why
    exp.degenerate = why != ""
    return exp


def combine(parts: list, exp):
    """Flags of an average of several explanations (target layers): degenerate only when every part is."""
    flags = np.all([p.degenerate for p in parts], axis=0)
    exp.degenerate = flags
    exp.degenerate_reason = np.array(
        ["; ".join(f"{p.layer}: {p.degenerate_reason[i]}" for p in parts) if flags[i] else ""
         for i in range(len(flags))], dtype=object)
    return exp


def warn(exp, stacklevel: int = 3) -> None:
    """One warning for an explanation with degenerate maps."""
    flags = getattr(exp, "degenerate", None)
    if flags is None or not np.any(flags):
        return
    idx = np.flatnonzero(flags)
    warnings.warn(f"{len(idx)} of {len(flags)} {exp.method} map(s) are degenerate (image {int(idx[0])}: "
                  f"{exp.degenerate_reason[idx[0]]}); they are returned as computed but carry no spatial "
                  "information: see Explanation.degenerate / degenerate_reason", DegenerateMapWarning,
                  stacklevel=stacklevel)
