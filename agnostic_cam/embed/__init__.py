"""Explanations that ship inside the model: an ONNX file that returns its own saliency map.

:func:`embed` (``Explainer.embed`` and ``agnostic-cam embed``) writes the explainer's exported graph
with its original outputs unchanged plus ``saliency`` (N, H, W) float32 in [0, 1] (exactly
``Explanation.heatmap``'s normalisation), ``saliency_raw`` (N, h, w) at the layer's resolution and,
with ``per_class=True``, ``saliency_per_class`` (N, K, h, w) (each map ReLU'd and min-max scaled).
The map is the top-1 class's (``explain(target=None)``). The file then needs only ONNX Runtime (or any
ONNX runtime) to explain every inference. Embeddable methods: ``cam`` and ``gradcam`` (closed form)
on global-average-pool + linear heads, ``activation_map``, ``eigencam`` (power iteration; the map
agrees with the SVD's to 1e-3) and ``reciprocam`` / ``vit_reciprocam`` (the masked copies of the layer
run through the model's tail in one batched pass).
"""
from __future__ import annotations

import os

import onnx

from agnostic_cam.errors import OptionError
from agnostic_cam.embed.write import EMBEDDABLE, PER_CLASS, RAW, SALIENCY, build, save

__all__ = ["EMBEDDABLE", "PER_CLASS", "RAW", "SALIENCY", "embed", "save"]


def embed(adapter, path: str | os.PathLike | None, method: str = "cam", *, input_shape=None,
          per_class: bool = False, layers: int = 1, **options) -> onnx.ModelProto:
    """Build the embedded model for ``adapter`` (an explainer's) and write it to ``path`` (None: do not
    write); returns the ModelProto. ``input_shape``: one image's shape, for PyTorch / Keras models built
    without it; ``per_class``: also ``saliency_per_class``; ``options`` go to the method (e.g.
    ``softmax=False`` for reciprocam); ``layers``: how many target layers the explainer has (one here)."""
    if layers != 1:
        raise OptionError("embed explains one target layer; build the explainer with a single target_layer")
    model = build(adapter, method, input_shape, per_class, **options)
    if path is not None:
        save(model, path)
    return model
