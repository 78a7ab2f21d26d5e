"""Compare the explanations of two or more models: framework ports, exported files, quantized twins.

- :func:`compare`: the same images, methods and classes through any number of explainers; per
  method and pair of models the heatmaps' distances (max / mean |difference|, Spearman, SSIM,
  top-k% IoU) and the predictions' agreement, per image and aggregated (:class:`Comparison`).
- :func:`walk_layers`: for two models of one architecture, layer by layer how far activations and
  activation maps diverge, and the first layer where they split (:class:`LayerWalk`).

See docs/compare.md. Importing this package imports no framework.
"""
from agnostic_cam.compare.result import Comparison
from agnostic_cam.compare.run import compare
from agnostic_cam.compare.walk import LayerWalk, walk_layers

__all__ = ["compare", "Comparison", "walk_layers", "LayerWalk"]
