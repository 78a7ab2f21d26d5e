"""Demo section: the same CNN explained from PyTorch and from its Keras twin (same weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from agnostic_cam.demo.page import Figure, Section, Table, row_labels

from agnostic_cam.core import layout as L
METHODS = ("gradcam", "gradcam++", "layercam", "scorecam", "ablationcam", "eigencam", "cam")


def frameworks_section(out_dir: Path, model, images: np.ndarray, labels: np.ndarray) -> Section:
    """Every CAM method on the PyTorch demo model and on its Keras twin: figure of the Keras maps
    and the largest heatmap difference per method (scripts/compare_frameworks.py adds ONNX)."""
    from agnostic_cam import Explainer
    from agnostic_cam.demo import keras_model, torch_model
    from agnostic_cam.demo.data import CLASSES
    from agnostic_cam.render.figures import FIGURE_DPI, compare_figure

    tex = Explainer.from_torch(model, torch_model.TARGET_LAYER, input_shape=images.shape[1:], progress=False)
    kex = Explainer.from_keras(keras_model.keras_twin(model), keras_model.TARGET_LAYER, progress=False)
    nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    exps, rows = {}, []
    for name in METHODS:
        exps[name] = kex.explain(nhwc, name, target=labels)
        diff = np.abs(exps[name].heatmap - tex.explain(images, name, target=labels).heatmap).max()
        rows.append([name, f"{diff:.1e}"])
    titles, wrong = row_labels(CLASSES, labels, kex.predict(nhwc).argmax(axis=1))
    compare_figure(images, exps, titles=titles, wrong=wrong).savefig(out_dir / "keras_twin.png", dpi=FIGURE_DPI)
    return Section("keras", "Keras: the same maps",
                   "The demo CNN rebuilt in Keras 3 with the PyTorch weights (`Explainer.from_keras(model, 'relu3')`, "
                   "NHWC input), explaining the true class of each image. Rows: images; columns: methods on the "
                   "Keras model.", [Figure("keras_twin.png", "CAM methods on the Keras twin.")],
                   Table(["method", "max |Keras - PyTorch| heatmap"], rows))
