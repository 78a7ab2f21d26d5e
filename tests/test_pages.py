"""The pictures a user looks at first: the audit report's HTML, the demo page's HTML and the figures.

Structure only (escaping, ties, counts, marks, colour scales, text sizes); what a reader sees is
checked by eye with scripts/screenshots.py (headless Chromium).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from agnostic_cam.demo.page import Figure, Section, Table, write_page
from agnostic_cam.core.explanation import Explanation
from agnostic_cam.audit.report import best_methods, fmt, render_report
from agnostic_cam.render.figures import FIGURE_DPI, compare_figure

MIN_PX = 12  # figure text, in pixels at the saved resolution (the pages show figures at natural size)


def _results(tmp_path):
    (tmp_path / "overlays").mkdir()
    for name in ("a__input", "a__gradcam", "a__scorecam"):
        Image.fromarray(np.zeros((12, 20, 3), np.uint8)).save(tmp_path / "overlays" / f"{name}.png")
    row = {"deletion_auc": 0.0021, "insertion_auc": 0.5, "drop_pct": 10.0, "increase": 1.0, "pointing_hit": 1.0,
           "seconds": 0.1}
    counts = {"deletion_auc": 1, "insertion_auc": 1, "drop_pct": 1, "increase": 1, "pointing_hit": 1, "seconds": 1}
    summary = {"gradcam": {**row, "images": 1, "counts": counts},
               "scorecam": {**row, "deletion_auc": 0.0024, "insertion_auc": 0.7, "images": 1, "counts": counts}}
    image = {"file": "<script>x</script>.png", "input": "overlays/a__input.png", "label": "cat", "true_label": "dog",
             "score": 2.0, "probability": 0.9,
             "methods": {m: {**row, "overlay": f"overlays/a__{m}.png"} for m in ("gradcam", "scorecam")}}
    return {"model": "net.onnx", "layer": "feat", "layout": "NCHW", "summary": summary, "classes": {},
            "settings": {"steps": 5}, "images": [image], "run": {"explained": 1, "failed": []}}


def test_report_html(tmp_path):
    html = render_report(_results(tmp_path), tmp_path)
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;.png" in html  # autoescaped
    assert "100% (1/1)" in html  # percentages carry their count
    cells = re.findall(r"<td class=\"(best)?\">([^<]*)</td>", html)
    assert ("best", "0.700") in cells and ("", "0.500") in cells
    assert not any(b and t == "0.002" for b, t in cells)  # 0.0021 and 0.0024 both show 0.002: a tie, no winner
    assert "&#x2717; wrong: true dog" in html and "class=\"wrong\"" in html
    assert "class=\"bar\"" in html and html.count("data:image/png;base64,") == 3


def test_best_is_decided_on_displayed_values():
    s = {"a": {"deletion_auc": 0.0021}, "b": {"deletion_auc": 0.0024}, "c": {"deletion_auc": 0.01}}
    assert best_methods(s, "deletion_auc") == {"a", "b"}
    assert best_methods({k: s[k] for k in "ab"}, "deletion_auc") == set()
    assert fmt(2 / 3, "pointing_hit", 3) == "67% (2/3)" and fmt(None, "increase", 0) == "–"


def test_demo_page_html(tmp_path):
    sec = Section("cams", "CAMs <b>", "layer `features.relu3`", [Figure("cam.png", "a <caption>")],
                  Table(["method", "time"], [["gradcam", "3 ms"]]))
    html = write_page(tmp_path, "intro", [sec], [("keras", "needs tensorflow: pip install 'agnostic-cam[keras]'")]
                      ).read_text()
    assert "CAMs &lt;b&gt;" in html and "a &lt;caption&gt;" in html and "<code>features.relu3</code>" in html
    assert "Skipped sections" in html and "agnostic-cam[keras]" in html
    assert "colour" in html and "wrong" in html  # the legend explains the colour bar and the marks
    assert "max-width:none" in html  # figures at natural size: their text stays >= 12 px


@pytest.mark.parametrize("which", ["compare", "explanation"])
def test_figure_text_is_readable(which):
    rng = np.random.default_rng(0)
    imgs = rng.random((2, 3, 16, 16)).astype(np.float32)
    e = Explanation(rng.random((2, 16, 16)).astype(np.float32), rng.random((2, 4, 4)).astype(np.float32),
                    np.array([1, 2]), np.array([0.5, 0.7]), "gradcam", "layer4")
    if which == "compare":
        fig = compare_figure(imgs, {"gradcam": e, "eigencam": e}, titles=["true a\npred b", "true b\npred b"],
                             wrong=[True, False])
    else:
        fig = e.figure(imgs)
    texts = [t for t in fig.findobj(lambda o: hasattr(o, "get_text") and hasattr(o, "get_fontsize"))
             if t.get_text().strip() and t.get_visible()]
    assert texts and min(t.get_fontsize() * FIGURE_DPI / 72 for t in texts) >= MIN_PX
    assert len(fig.axes) == (7 if which == "compare" else 7)  # 2 x 3 image axes + the colour bar
    labels = [t.get_text() for t in texts]
    if which == "compare":
        assert "\u2717 wrong" in labels and "true a\npred b" in labels
    else:
        assert "gradcam at layer layer4" in labels and "class 1\nscore 0.5" in labels


def test_pixel_method_figure_names_no_layer():
    rng = np.random.default_rng(1)
    e = Explanation(rng.random((1, 8, 8)).astype(np.float32), rng.normal(size=(1, 3, 8, 8)).astype(np.float32),
                    np.array([0]), np.array([1.0]), "guided_backprop", "layer4")
    titles = [t.get_text() for t in e.figure(rng.random((1, 3, 8, 8))).findobj(lambda o: hasattr(o, "get_text"))]
    assert "guided_backprop" in titles and not any("layer4" in t for t in titles)


def test_demo_skips_sections_whose_framework_is_missing():
    from agnostic_cam.demo.page import missing_modules
    from agnostic_cam.demo.run import NEEDS, SECTIONS

    assert missing_modules(("numpy", "no_such_module_agnostic_cam")) == ["no_such_module_agnostic_cam"]
    assert set(NEEDS) <= set(SECTIONS) and "tensorflow" in NEEDS["keras"]
