"""Where two models of one architecture part ways: layer by layer, how far their activations and
each layer's activation map diverge on the same images.

For each matched pair of layers (:mod:`agnostic_cam.compare.matching`) and the images given:

- ``act_rel``: max |A - B| / max |B|, the activations' largest difference relative to B's scale;
- ``act_mean_rel``: mean |A - B| / mean |B|;
- ``map_diff``: the largest difference of the layer's activation map: the channel mean of the
  activations, min-max normalised per image to [0, 1] (the class-agnostic CAM of the layer; it
  needs no gradient, so it works on every backend, quantized graphs included);
- ``map_spearman``: rank correlation of those maps, averaged over the images (None for 1x1 maps).

``first_over``: the first layer whose ``act_rel`` exceeds ``tol``. ``first_split``: the first
layer from which every later matched layer exceeds ``tol`` too: the layer where the two models
split for good. They differ when a single layer differs and the next ones agree again (a batch
norm folded into the convolution before it in an export: the convolution's own output differs,
the ReLU after it does not).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agnostic_cam.compare.matching import match_layers
from agnostic_cam.compare.measures import nanmean
from agnostic_cam.compare.run import inputs_for, name_explainers
from agnostic_cam.errors import OptionError
from agnostic_cam.evaluation.similarity import spearman

DEFAULT_TOL = 1e-3


def activation_map(act: np.ndarray) -> np.ndarray:
    """(N, C, h, w) activations -> (N, h, w) channel means min-max normalised per image."""
    m = np.asarray(act, np.float64).mean(axis=1)
    lo = m.min(axis=(1, 2), keepdims=True)
    return (m - lo) / (m.max(axis=(1, 2), keepdims=True) - lo + 1e-12)


@dataclass
class LayerWalk:
    """``rows``: one dict per matched pair of layers, in forward order: ``a``, ``b`` (their names),
    ``shape`` (C, h, w), ``act_rel``, ``act_mean_rel``, ``map_diff``, ``map_spearman``, ``over``."""

    names: tuple[str, str]
    rows: list[dict]
    tol: float
    matched_by: str
    first_over: dict | None = field(default=None)
    first_split: dict | None = field(default=None)

    def table(self) -> str:
        """The walk as fixed-width text; ``>`` marks layers over ``tol``, ``*`` the first split."""
        wa = max([len(self.names[0])] + [len(r["a"]) for r in self.rows])
        wb = max([len(self.names[1])] + [len(r["b"]) for r in self.rows])
        lines = [f"  {self.names[0]:<{wa}}  {self.names[1]:<{wb}}  {'act rel':>9}  {'map diff':>9}",]
        for r in self.rows:
            mark = "*" if r is self.first_split else ">" if r["over"] else " "
            lines.append(f"{mark} {r['a']:<{wa}}  {r['b']:<{wb}}  {r['act_rel']:>9.2e}  {r['map_diff']:>9.2e}")
        split = self.first_split
        lines.append(f"tolerance {self.tol:g} on act rel; " + ("no layer over it" if split is None else
                     f"first split: {split['a']} / {split['b']}"))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"models": list(self.names), "tol": self.tol, "matched_by": self.matched_by, "rows": self.rows,
                "first_over": self.first_over, "first_split": self.first_split}


def walk_layers(explainers, images, *, mapping: dict | None = None, tol: float = DEFAULT_TOL,
                layout: str = "NCHW") -> LayerWalk:
    """Walk two explainers' matched layers on ``images`` (as for :func:`~agnostic_cam.compare.compare`:
    one batch in ``layout``, transposed per explainer, or a dict name -> batch) and report how far
    they diverge at each; see the module's notes. ``mapping``: {layer of A: layer of B} instead of
    matching by order, shape, kind and name. ``tol``: the relative activation difference counted as
    a split (default 1e-3: float32 ports and exports stay below ~1e-5, int8 twins are far above)."""
    named = name_explainers(explainers)
    if len(named) != 2:
        raise OptionError(f"walk_layers compares two models; got {len(named)}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise OptionError(f"tol must be a positive number (a relative activation difference); got {tol!r}")
    (na, ea), (nb, eb) = named.items()
    xs = inputs_for(named, images, layout)
    pairs, how = match_layers(ea, eb, mapping)
    acts_a = ea.adapter.activations(xs[na], [a.name for a, _ in pairs])
    acts_b = eb.adapter.activations(xs[nb], [b.name for _, b in pairs])
    rows = []
    for (a, b), va, vb in zip(pairs, acts_a, acts_b):
        va, vb = np.asarray(va, np.float64), np.asarray(vb, np.float64)
        d = np.abs(va - vb)
        ma, mb = activation_map(va), activation_map(vb)
        rows.append({"a": a.name, "b": b.name, "op_a": a.op, "op_b": b.op, "shape": list(a.shape),
                     "act_rel": float(d.max() / (np.abs(vb).max() + 1e-12)),
                     "act_mean_rel": float(d.mean() / (np.abs(vb).mean() + 1e-12)),
                     "map_diff": float(np.abs(ma - mb).max()),
                     "map_spearman": nanmean(spearman(x, y) for x, y in zip(ma, mb))})
    for r in rows:
        r["over"] = r["act_rel"] > tol
    first_over = next((r for r in rows if r["over"]), None)
    first_split = None
    for k in range(len(rows) - 1, -1, -1):  # the start of the last run of layers that are all over tol
        if not rows[k]["over"]:
            break
        first_split = rows[k]
    return LayerWalk((na, nb), rows, float(tol), how, first_over, first_split)
