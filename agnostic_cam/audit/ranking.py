"""Which method to trust for this model: the methods ranked per metric, and how much the metrics agree.

Metrics often rank explanation methods differently (LATEC, Klein et al. 2024), so a single "best
method" misleads unless the metrics agree. :func:`rank_methods` ranks the methods by each metric's
mean over the images (1 = best, in the metric's direction, ties sharing the mean rank), gives
Kendall's tau-b between every two metrics' rankings, and names a method only when every metric
ranks it first; otherwise it says which metric prefers which method.
"""
from __future__ import annotations

import itertools

import numpy as np

# +1: higher is better, -1: lower is better (the audit's columns; seconds is not a quality)
DIRECTION = {"deletion_auc": -1, "insertion_auc": 1, "drop_pct": -1, "increase": 1, "pointing_hit": 1,
             "energy_pointing": 1, "relevance_mass": 1, "relevance_rank": 1, "roc_auc": 1, "sparseness": 1,
             "complexity": -1}


def _ranks(v: np.ndarray) -> np.ndarray:
    """Rank 1 = largest, ties share their mean rank."""
    order = np.argsort(-v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for x in np.unique(v):
        r[v == x] = r[v == x].mean()
    return r


def kendall_tau(a, b) -> float | None:
    """Kendall's tau-b of two score vectors (None when either is constant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    conc = disc = ta = tb = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
        if da == 0 and db == 0:
            continue
        if da == 0:
            ta += 1
        elif db == 0:
            tb += 1
        elif da == db:
            conc += 1
        else:
            disc += 1
    den = np.sqrt((conc + disc + ta) * (conc + disc + tb))
    return None if den == 0 else float((conc - disc) / den)


def rank_methods(summary: dict[str, dict]) -> dict | None:
    """Ranking of the methods in an audit summary {method: {metric: mean}}; None for fewer than 2 methods."""
    methods = list(summary)
    if len(methods) < 2:
        return None
    used = {}
    for c, sign in DIRECTION.items():
        vals = [summary[m].get(c) for m in methods]
        if all(v is not None and np.isfinite(v) for v in vals) and len(set(vals)) > 1:
            used[c] = sign * np.asarray(vals, float)
    ranks = {c: dict(zip(methods, _ranks(v).tolist())) for c, v in used.items()}
    first = {c: sorted(m for m in methods if r[m] == min(r.values())) for c, r in ranks.items()}
    tau = {f"{a} ~ {b}": kendall_tau(used[a], used[b]) for a, b in itertools.combinations(used, 2)}
    valid = [t for t in tau.values() if t is not None]
    winners = {tuple(v) for v in first.values()}
    agree = len(winners) == 1 and len(next(iter(winners))) == 1 if winners else False
    if not used:
        verdict = "no metric separates the methods"
    elif agree:
        verdict = f"every metric ranks {first[next(iter(first))][0]} first"
    else:
        verdict = "the metrics disagree: " + "; ".join(f"{c} ranks {' = '.join(v)} first" for c, v in first.items())
    return {"metrics": list(used), "ranks": ranks, "first": first, "kendall_tau": tau,
            "mean_tau": None if not valid else float(np.mean(valid)),
            "best": first[next(iter(first))][0] if agree else None, "verdict": verdict}
