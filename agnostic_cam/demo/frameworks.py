"""Demo section: the same CNN explained from PyTorch and from its Keras twin (same weights)."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from agnostic_cam import layout as L

METHODS = ("gradcam", "gradcam++", "layercam", "scorecam", "ablationcam", "eigencam", "cam")


def frameworks_section(out_dir: Path, model, images: np.ndarray, labels: np.ndarray) -> str:
    """Every CAM method on the PyTorch demo model and on its Keras twin: figure of the Keras maps
    and the largest heatmap difference per method (scripts/compare_frameworks.py adds ONNX)."""
    from agnostic_cam import Explainer
    from agnostic_cam.demo import keras_model, torch_model
    from agnostic_cam.viz import compare_figure

    tex = Explainer.from_torch(model, torch_model.TARGET_LAYER, input_shape=images.shape[1:], progress=False)
    kex = Explainer.from_keras(keras_model.keras_twin(model), keras_model.TARGET_LAYER, progress=False)
    nhwc = L.from_chw(images, L.NHWC)
    exps, rows = {}, []
    for name in METHODS:
        exps[name] = kex.explain(nhwc, name, target=labels)
        diff = np.abs(exps[name].heatmap - tex.explain(images, name, target=labels).heatmap).max()
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{diff:.1e}</td></tr>")
    fig = compare_figure(images, exps)
    fig.savefig(out_dir / "keras_twin.png", dpi=90)
    return ("<h2>Keras: the same maps</h2><p>The demo CNN rebuilt in Keras 3 with the PyTorch weights "
            "(<code>Explainer.from_keras(model, 'relu3')</code>, NHWC input). Rows: images; columns: methods "
            "on the Keras model.</p><img src='keras_twin.png' style='max-width:100%'>"
            "<table><tr><th>method</th><th>max |Keras - PyTorch| heatmap</th></tr>" + "".join(rows) + "</table>")
