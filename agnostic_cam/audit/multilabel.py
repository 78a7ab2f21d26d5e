"""The audit of a multi-label model: ``--task multilabel``, every present class of every image scored.

The present classes of an image come from ``--threshold`` (default 0.5) on the model's probabilities
(:class:`~agnostic_cam.targets.multilabel.MultiLabel`'s rule: a final Sigmoid gives probabilities,
an output outside [0, 1] logits; a batch whose output cannot tell fails with that rule's error), or
from ground truth:
``--present FILE.json``, ``{image name: [class index, ...]}``. Each image's methods explain it once
per present class (one batch of rows); the faithfulness metrics (deletion / insertion AUC of that
class's output; average drop and increase in confidence only when the output is probabilities) are
kept per (image, class) row.

The store keeps one record per image (resume works per image) with its ``rows``; the result files
get one record per row (:func:`expand`): metrics.csv one line per (image, class, method), results.json
one ``images`` entry per row, the report one card per row; images with no present class are listed
in results.json's ``no_class``.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator

import numpy as np

from agnostic_cam.audit.record import Result, _png, overlay_at, predict_batch
from agnostic_cam.audit.scoring import score_maps
from agnostic_cam.core.degenerate import DegenerateMapWarning
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.targets.multilabel import SCORES, MultiLabel


def make_task(threshold: float = 0.5, present: dict | None = None, scores: str = "auto") -> dict:
    """The validated ``--task multilabel`` settings (a JSON-able dict)."""
    MultiLabel(threshold, scores=scores)  # the same checks as the target's (OptionError)
    if present is not None:
        if not isinstance(present, dict) or not all(
                isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v)
                for v in present.values()):
            raise OptionError("--present must be a JSON object {image name: [class index, ...]} (an empty list: no "
                              "class in that image)")
    return {"task": "multilabel", "threshold": float(threshold), "present": present,
            "scores": scores if scores in SCORES else "auto"}


def check_items(task: dict, items) -> None:
    """With ``--present``: every image has its class list."""
    if task["present"] is None:
        return
    missing = [it.file for it in items if it.rel not in task["present"] and it.file not in task["present"]]
    if missing:
        raise OptionError(f"--present has no class list for {len(missing)} image(s) (e.g. {missing[0]!r}); give one for "
                          "every image ([] for an image without a class), or drop --present to use --threshold")


def preflight(ctx, probe: np.ndarray, out: np.ndarray) -> None:
    """The output is a classifier's (N, K). (Whether it reads as logits or probabilities is decided per
    batch of images: an output that cannot tell fails those images with the rule's InputError.)"""
    if out.ndim != 2:
        raise OptionError(f"--task multilabel needs a classifier's output (N, K); the explained output has shape "
                          f"{out.shape}")


def _target(ctx, batch) -> MultiLabel:
    task = ctx.cfg.task
    if task["present"] is None:
        return MultiLabel(task["threshold"], scores=task["scores"])
    return MultiLabel([task["present"].get(b.item.rel, task["present"].get(b.item.file)) for b in batch])


def _read_as(ctx, x: np.ndarray, out: np.ndarray, scores: str) -> str | None:
    """'logits' or 'probabilities' (the MultiLabel rule; for --present lists too), None when it cannot tell."""
    if scores != "given":
        return scores
    from agnostic_cam.engine.graph import head_op

    ex = ctx.ex
    try:
        return MultiLabel(0.5, scores=ctx.cfg.task["scores"]).present(
            out, lambda: head_op(ex.adapter.engine(x.shape[1:]).model, ex.adapter.output_name)).scores
    except InputError:
        return None


def compute(ctx, batch) -> list[Result]:
    """Records of ``batch`` for the multi-label audit: one per image, its ``rows`` one per present class."""
    from agnostic_cam.inputs.image_files import to_uint8

    ex, cfg = ctx.ex, ctx.cfg
    x, out = predict_batch(ctx, batch)
    target, task = _target(ctx, batch), cfg.task
    shown = [b.display if b.display is not None else to_uint8(b.rgb) for b in batch]
    exps, secs = {}, {}
    for method in cfg.methods:
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # degenerate maps are counted in the report instead
            warnings.simplefilter("ignore", DegenerateMapWarning)
            exps[method] = ex.explain(x, method, target=target)
        secs[method] = time.perf_counter() - t0
        step = getattr(ctx, "on_step", None)
        if step is not None:
            step([b.item.key for b in batch], method)
    first = exps[cfg.methods[0]]
    image, classes = first.image_index, first.targets
    read = _read_as(ctx, x, out, first.meta["multilabel"]["scores"])
    probs = None if read is None else out if read == "probabilities" else 1 / (1 + np.exp(-out))
    is_prob = read == "probabilities"
    scores = None
    if len(image) and "faithfulness" in cfg.metrics:
        t0 = time.perf_counter()
        scores = score_maps(ex, x[image], out[image], {m: e.heatmap for m, e in exps.items()}, classes, cfg.steps,
                            ex.adapter.layout, "raw")
        share = (time.perf_counter() - t0) / len(cfg.methods)
    how = "given" if task["present"] is not None else f"p >= {task['threshold']:g}"
    results = []
    for j, b in enumerate(batch):
        it = b.item
        mine = np.flatnonzero(image == j)
        record = {"file": it.file, "rel": it.rel, "key": it.key, "sha": b.sha, "fingerprint": ctx.fingerprint,
                  "task": "multilabel", "target": f"classes {[int(c) for c in classes[mine]]} ({how})",
                  "class": None, "label": "", "true_label": it.true_label, "score": None, "probability": None,
                  "input": f"overlays/{it.stem}__input.png", "methods": {}, "rows": []}
        res = Result(record, {record["input"]: _png(shown[j])})
        for r in mine:
            k = int(classes[r])
            p = None if probs is None else float(probs[j, k])
            row = {"class": k, "label": ctx.label(k), "score": float(out[j, k]), "probability": p,
                   "target": f"class {k} ({how}" + ("" if p is None else f"; p = {p:.3g}") + ")", "methods": {}}
            for m, e in exps.items():
                name = f"overlays/{it.stem}__{m.replace('+', 'p')}__c{k}.png"
                sc = scores[m] if scores is not None else None
                drop = None if sc is None or not is_prob or np.isnan(sc["drop"][r]) else float(100 * sc["drop"][r])
                row["methods"][m] = {
                    "deletion_auc": None if sc is None else float(sc["deletion_auc"][r]),
                    "insertion_auc": None if sc is None else float(sc["insertion_auc"][r]),
                    "drop_pct": drop, "increase": None if sc is None or not is_prob else float(sc["increase"][r]),
                    "pointing_hit": None, "seconds": round((secs[m] + (share if sc is not None else 0)) / len(image), 4),
                    "overlay": name, "degenerate": "" if e.degenerate is None else str(e.degenerate_reason[r])}
                res.files[name] = _png(overlay_at(shown[j], e.heatmap[r]))
            record["rows"].append(row)
        results.append(res)
    return results


class RowRecords:
    """The records of a multi-label audit as one record per (image, class) row, read as they come;
    ``no_class``: the files of the images without a present class (known once iterated)."""

    def __init__(self, records: Iterable[dict]):
        self.records, self.no_class = records, []

    def __iter__(self) -> Iterator[dict]:
        self.no_class = []
        return expand(self.records, self.no_class)


def expand(records: Iterable[dict], no_class: list | None = None) -> Iterator[dict]:
    """One record per row of each multi-label record (its image's fields, the row's class, label, score,
    probability, target and methods; key ``<image key>#<class>``); other records as they are."""
    for r in records:
        if "rows" not in r:
            yield r
            continue
        if not r["rows"] and no_class is not None:
            no_class.append(r["file"])
        base = {k: v for k, v in r.items() if k != "rows"}
        for row in r["rows"]:
            yield {**base, **row, "key": f"{r['key']}#{row['class']}"}
