"""What :func:`agnostic_cam.compare.compare` returns: per image, method and pair of models the
heatmaps' distances and the predictions' agreement; their summary; the worst-agreeing images;
a table (``to_records`` / ``to_frame`` / ``to_csv``), JSON (``to_dict``) and a figure."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agnostic_cam.compare.measures import aggregate, nanmean
from agnostic_cam.errors import MissingDependencyError

COLUMNS = ("image", "name", "method", "a", "b", "max_diff", "mean_diff", "spearman", "ssim", "iou", "target_a",
           "target_b", "top1_a", "top1_b", "top1_agree", "score_a", "score_b", "score_diff")
TEXT_COLUMNS = ("name", "method", "a", "b")


def pair_name(a: str, b: str) -> str:
    return f"{a} vs {b}"


@dataclass
class Comparison:
    """``rows``: one dict per image, method and pair (``a``, ``b``) with ``max_diff``, ``mean_diff``,
    ``spearman``, ``ssim``, ``iou`` (top-``top`` overlap), the explained classes, both models' top-1
    and whether they agree, both scores and their difference. ``explanations[method][model]``: the
    :class:`~agnostic_cam.core.explanation.Explanation` objects; ``heatmaps`` the same maps at one
    size; ``images``: the reference model's input batch; ``outputs[model]``: (N, K) outputs."""

    names: list[str]
    methods: list[str]
    rows: list[dict]
    explanations: dict = field(repr=False, default_factory=dict)
    heatmaps: dict = field(repr=False, default_factory=dict)
    images: np.ndarray | None = field(repr=False, default=None)
    outputs: dict = field(repr=False, default_factory=dict)
    seconds: dict = field(repr=False, default_factory=dict)
    top: float = 0.1
    image_names: list[str] = field(default_factory=list)
    layers: dict = field(default_factory=dict)

    @property
    def pairs(self) -> list[str]:
        return list(dict.fromkeys(pair_name(r["a"], r["b"]) for r in self.rows))

    @property
    def summary(self) -> dict:
        """{method: {"a vs b": aggregate}}: the largest ``max_diff`` and ``score_diff`` over the images,
        the means of ``mean_diff``, ``spearman``, ``ssim``, ``iou`` and the share of images whose top-1
        agree (``top1_agree``)."""
        out: dict = {}
        for r in self.rows:
            out.setdefault(r["method"], {}).setdefault(pair_name(r["a"], r["b"]), []).append(r)
        return {m: {p: aggregate(rs) for p, rs in by.items()} for m, by in out.items()}

    def pair(self, method: str, a: str, b: str) -> dict:
        """The summary of ``method`` for models ``a`` and ``b`` (either order)."""
        by = self.summary[method]
        return by[pair_name(a, b)] if pair_name(a, b) in by else by[pair_name(b, a)]

    def disagreement(self) -> np.ndarray:
        """Per image: the mean absolute heatmap difference averaged over methods and pairs."""
        n = len(self.image_names)
        return np.array([nanmean(r["mean_diff"] for r in self.rows if r["image"] == i) or 0.0 for i in range(n)])

    def worst_images(self, k: int | None = None) -> list[int]:
        """Image indices, the worst-agreeing first (by :meth:`disagreement`; ties by index)."""
        d = self.disagreement()
        order = sorted(range(len(d)), key=lambda i: (-d[i], i))
        return order if k is None else order[:k]

    def max_diff(self, method: str) -> float:
        """The largest absolute heatmap difference of ``method`` over every pair and image."""
        return max(r["max_diff"] for r in self.rows if r["method"] == method)

    # -- tables -------------------------------------------------------------------------------
    def to_records(self) -> list[dict]:
        """The per-image rows as plain dicts with the columns of :data:`COLUMNS` (``name``: the image's name)."""
        return [{c: (self.image_names[r["image"]] if c == "name" else r.get(c)) for c in COLUMNS} for r in self.rows]

    def to_frame(self):
        """The per-image rows as a pandas DataFrame (needs pandas; :meth:`to_records` / :meth:`to_csv` do not)."""
        try:
            import pandas as pd
        except ImportError:
            raise MissingDependencyError("Comparison.to_frame needs pandas (pip install pandas); without it use "
                                         "result.to_records() (a list of dicts) or result.to_csv(path)") from None
        return pd.DataFrame(self.to_records(), columns=list(COLUMNS))

    def csv_text(self) -> str:
        """The per-image rows as CSV text; names neutralised for spreadsheets (no formula runs)."""
        from agnostic_cam.audit.files import csv_cell

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for rec in self.to_records():
            w.writerow([csv_cell(v) if c in TEXT_COLUMNS else _cell(v) for c, v in rec.items()])
        return buf.getvalue()

    def to_csv(self, path) -> Path:
        """Write :meth:`csv_text` to ``path`` atomically (a reader never sees half a file)."""
        from agnostic_cam.audit.files import atomic_write

        path = Path(path)
        atomic_write(path, self.csv_text())
        return path

    def to_dict(self) -> dict:
        """JSON-ready: models, layers, methods, the summary, the images worst first and the rows."""
        return {"models": self.names, "layers": self.layers, "methods": self.methods, "top": self.top,
                "summary": self.summary, "worst_images": [self.image_names[i] for i in self.worst_images()],
                "rows": self.to_records()}

    def table(self) -> str:
        """The summary as fixed-width text: one line per method and pair."""
        head = f"{'method':<16}{'pair':<22}{'max diff':>10}{'mean diff':>11}{'spearman':>10}{'ssim':>8}" \
               f"{'IoU':>7}{'top-1':>7}{'score diff':>12}"
        lines = [head, "-" * len(head)]
        for m, by in self.summary.items():
            for p, s in by.items():
                lines.append(f"{m:<16}{p:<22}{s['max_diff']:>10.2e}{s['mean_diff']:>11.2e}{_f(s['spearman'], 10)}"
                             f"{_f(s['ssim'], 8)}{_f(s['iou'], 7)}{100 * s['top1_agree']:>6.0f}%"
                             f"{s['score_diff']:>12.2e}")
        return "\n".join(lines)

    def figure(self, n_images: int = 4):
        """A matplotlib Figure: one row per method, per image (the worst-agreeing first) one column per model."""
        from agnostic_cam.compare.figure import comparison_figure

        return comparison_figure(self, n_images)

    def __repr__(self) -> str:
        return f"Comparison(models={self.names}, methods={self.methods}, images={len(self.image_names)})"


def _f(v, width: int) -> str:
    return f"{'–':>{width}}" if v is None else f"{v:>{width}.3f}"


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    if isinstance(v, bool):
        return str(int(v))
    return f"{v:.6g}" if isinstance(v, float) else str(v)
