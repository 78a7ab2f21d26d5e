"""Demo section "Feature visualisation": what the demo model's layers and filters respond to."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from agnostic_cam.demo.data import CLASSES
from agnostic_cam.demo.page import Figure, Section, timing_table


def _inversion_figure(ex, image: np.ndarray, layers: list[str]):
    """The image and its inversions from each layer, side by side."""
    from agnostic_cam.features.result import grid_figure, stretch

    results = [ex.invert(image, layer, seed=0) for layer in layers]
    panels = [stretch(image.transpose(0, 2, 3, 1), 0, 100)[0]]
    panels += [stretch(r.images.transpose(0, 2, 3, 1))[0] for r in results]
    titles = ["input"] + [f"from {r.layer}\ndistance {r.meta['distance']:.2g}" for r in results]
    return grid_figure(panels, titles, len(panels), "inversion (Mahendran & Vedaldi 2015)", 1.8)


def features_section(out_dir: Path, model, images: np.ndarray, labels: np.ndarray) -> Section:
    """Feature maps, filters, deconvnet top-5, class models, filter maximisation, deep dream and
    inversion on the demo model; one PNG each."""
    from agnostic_cam import Explainer
    from agnostic_cam.demo.torch_model import TARGET_LAYER
    from agnostic_cam.render.figures import FIGURE_DPI

    ex = Explainer.from_torch(model, TARGET_LAYER, input_shape=images.shape[1:], progress=False)
    img = images[:1]
    pick = [images[i % len(images)][None] for i in range(4)]  # works with fewer demo images too
    figures: list[tuple[str, str, object]] = []  # (file, caption, figure or callable)
    figures.append(("features_maps_relu1.png", f"Feature maps of `features.relu1` for a {CLASSES[labels[0]]}: "
                    "the 16 channels with the largest mean activation.",
                    lambda: ex.feature_maps(img, "features.relu1", top_k=16).figure()))
    figures.append(("features_maps_relu3.png", "Feature maps of `features.relu3` (16 x 16).",
                    lambda: ex.feature_maps(img, "features.relu3", top_k=16).figure()))
    figures.append(("features_filters_conv1.png", "First-layer filters (3 x 3, RGB).",
                    lambda: ex.filters("features.conv1").figure(cell=0.8)))
    figures.append(("features_deconv_relu2.png", "Deconvnet (Zeiler & Fergus 2014): layer relu2, the 5 filters "
                    "with the strongest activation, each projected back to pixels from its single strongest "
                    "activation.", lambda: ex.deconv_reconstruction(pick[1], "features.relu2", 5).figure()))
    figures.append(("features_deconv_relu3.png", "Deconvnet: layer relu3, top 5 filters.",
                    lambda: ex.deconv_reconstruction(pick[1], "features.relu3", 5).figure()))
    figures.append(("features_class_models.png", "Class model visualisation (Simonyan et al. 2014) for each class "
                    f"{list(CLASSES)}: images maximising the class logit, with L2, TV, jitter and blur.",
                    lambda: _labelled(ex.class_model(list(range(len(CLASSES))), seed=0))))
    figures.append(("features_filter_max_relu3.png", "Filter maximisation: images maximising the mean activation of "
                    "channels 0-7 of `features.relu3`.",
                    lambda: ex.filter_maximisation("features.relu3", list(range(8)), seed=0).figure(cols=8)))
    figures.append(("features_deep_dream.png", "DeepDream at `features.relu2`, 3 octaves.",
                    lambda: ex.deep_dream(pick[2], "features.relu2", octaves=3, clip=(0.0, 1.0), seed=0).figure()))
    figures.append(("features_inversion.png", "Inversion: images whose representation at each layer matches the "
                    "input's (total-variation regulariser), starting from noise.",
                    lambda: _inversion_figure(ex, pick[3], ["features.relu1", "features.relu2", "features.relu3"])))
    shown, rows = [], []
    for name, caption, make in figures:
        t = time.perf_counter()
        make().savefig(out_dir / name, dpi=FIGURE_DPI)
        rows.append((name, time.perf_counter() - t))
        shown.append(Figure(name, caption))
    return Section("features", "Feature visualisation",
                   "What a layer or a filter responds to (`ex.feature_maps / filters / deconv_reconstruction / "
                   "class_model / filter_maximisation / deep_dream / invert`).", shown, timing_table(rows, "figure"))


def _labelled(vis):
    """Class model captions with the class names."""
    targets, scores = vis.meta["targets"], vis.meta["scores"]
    vis.labels = [f"{CLASSES[t]}\nlogit {scores[i, t]:.3g}" for i, t in enumerate(targets)]
    return vis.figure()
