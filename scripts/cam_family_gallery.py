"""Gallery of the CAM family on the demo model, and its model-randomisation sanity check.

    PYTHONPATH=. python scripts/cam_family_gallery.py [--out docs/img]

Writes ``cam_family.png`` (rows: images; columns: the methods of issue 17 on the demo CNN at its
last ReLU) and ``sanity_gradcam.png`` / ``sanity_guided_backprop.png`` (the cascading
model-randomisation test, Adebayo et al. 2018). No downloads: the demo model trains in seconds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("gradcam", "eigengradcam", "gradcam_elementwise", "kpcacam", "fem", "segeigencam", "randomcam",
           "finercam", "shapleycam", "fullgrad", "sess", "refinecam")


def main(out: Path) -> None:
    from agnostic_cam import Explainer
    from agnostic_cam.demo.data import CLASSES, make_shapes
    from agnostic_cam.demo.page import row_labels
    from agnostic_cam.demo.torch_model import TARGET_LAYER, load_demo_net
    from agnostic_cam.evaluation.sanity import model_randomization
    from agnostic_cam.render.figures import FIGURE_DPI, compare_figure

    out.mkdir(parents=True, exist_ok=True)
    net = load_demo_net()
    x, y, _ = make_shapes(3, seed=11)
    ex = Explainer.from_torch(net, TARGET_LAYER, progress=False)
    multi = Explainer.from_torch(net, target_layers=["features.relu2", TARGET_LAYER], progress=False)
    exps = {m: (multi if m == "refinecam" else ex).explain(x, m, target=y, **({"num_scales": 4} if m == "sess" else {}))
            for m in METHODS}
    titles, wrong = row_labels(CLASSES, y, ex.predict(x).argmax(axis=1))
    short = {"gradcam_elementwise": "elementwise", "eigengradcam": "eigengrad", "segeigencam": "segeigen"}
    exps = {short.get(m, m): e for m, e in exps.items()}
    compare_figure(x, exps, titles=titles, wrong=wrong).savefig(out / "cam_family.png", dpi=FIGURE_DPI)
    for m in ("gradcam", "guided_backprop"):
        model_randomization(ex, x, m).figure().savefig(out / f"sanity_{m}.png", dpi=80)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    main(ap.parse_args().out)
