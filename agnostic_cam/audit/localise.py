"""The audit's metric groups beyond faithfulness: localisation against ground truth, complexity.

``--metrics`` picks groups: 'faithfulness' (deletion/insertion AUC, average drop, increase in
confidence: the default), 'localisation' (needs ``--ground-truth``; default when it is given) and
'complexity' (no forward pass). Per image and method the record gets the columns of each group;
:func:`forward_passes` is the count the CLI prints before it starts.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.evaluation import complexity, localisation, metrics

GROUPS = ("faithfulness", "localisation", "complexity")
LOCALISATION = ("pointing_hit", "energy_pointing", "relevance_mass", "relevance_rank", "roc_auc")
COMPLEXITY = ("sparseness", "complexity")
OUTLINE = (255, 255, 255)  # object outlines drawn on the overlays


def metric_groups(groups, ground_truth) -> list[str]:
    """The checked list of groups; None: faithfulness, plus localisation when there is ground truth."""
    if groups is None:
        return ["faithfulness"] + (["localisation"] if ground_truth else [])
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad or not groups:
        raise OptionError(f"metrics must be groups among {', '.join(GROUPS)} (comma-separated); got {groups!r}")
    if "localisation" in groups and not ground_truth:
        raise OptionError("the 'localisation' metrics need object boxes or masks: add --ground-truth PATH "
                          "(COCO JSON, or a YOLO, Pascal VOC or mask-image folder)")
    return list(dict.fromkeys(groups))


def forward_passes(groups: list[str], n_methods: int, steps: int) -> int:
    """Model runs per image for the metrics (the methods' own passes not counted): the prediction,
    and with faithfulness the blurred image plus, per method, image x map and 2 (steps - 1) curve steps."""
    n = 1
    if "faithfulness" in groups:
        n += 1 + n_methods * (1 + 2 * (steps - 1))
    return n


def localisation_scores(heat: np.ndarray, mask: np.ndarray | None) -> dict:
    """The localisation columns of one map (H, W) against its object mask (H, W) at the same size."""
    if mask is None:
        return dict.fromkeys(LOCALISATION)
    h, s = heat[None].astype(np.float64), mask[None]
    vals = {"pointing_hit": metrics.pointing_game(h, s)[0],
            "energy_pointing": localisation.energy_based_pointing_game(h, s)[0],
            "relevance_mass": localisation.relevance_mass_accuracy(h, s)[0],
            "relevance_rank": localisation.relevance_rank_accuracy(h, s)[0], "roc_auc": localisation.auc(h, s)[0]}
    empty = not mask.any()
    return {k: None if empty or not np.isfinite(float(v)) else float(v) for k, v in vals.items()}


def complexity_scores(heat: np.ndarray) -> dict:
    h = heat[None].astype(np.float64)
    return {"sparseness": float(complexity.sparseness(h)[0]), "complexity": float(complexity.complexity(h)[0])}


def draw_outline(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rgb`` (h, w, 3) with the border pixels of ``mask`` (any size, resized to (h, w)) painted."""
    from agnostic_cam.audit.ground_truth import resize_nearest

    m = resize_nearest(mask, rgb.shape[:2])
    pad = np.pad(m, 1, constant_values=False)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    edge = m & ~inner
    edge = edge | np.pad(edge, ((1, 0), (0, 0)))[:-1] | np.pad(edge, ((0, 0), (1, 0)))[:, :-1]  # 2 px thick
    out = rgb.copy()
    out[edge] = OUTLINE
    return out
