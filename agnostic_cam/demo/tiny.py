"""A tiny seeded CNN and a few synthetic images, for the runnable examples in the methods' docstrings.

Untrained (random weights from a fixed seed), so building it takes milliseconds and every example
gives the same numbers on every machine. Needs PyTorch.

    >>> from agnostic_cam import Explainer
    >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
    >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
    >>> ex.explain(tiny_images(), method="gradcam").heatmap.shape
    (2, 32, 32)
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from agnostic_cam.demo.data import make_shapes

TINY_LAYER = "relu2"  # (N, 16, 16, 16) at 32 x 32 inputs


def tiny_cnn(num_classes: int = 4, seed: int = 4) -> nn.Module:
    """conv(3->8)-ReLU-maxpool, conv(8->16)-ReLU (``"relu2"``, the layer the examples explain),
    global average pool, linear head (so CAM applies), in eval mode. Input (N, 3, H, W), e.g. 32 x 32.

    The weights come from ``seed`` without touching PyTorch's global random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(8, 16, 3, padding=1)), ("relu2", nn.ReLU()),
            ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(16, num_classes)),
        ])).eval()


def tiny_images(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` synthetic shape images (n, 3, size, size) float32 in [0, 1] (:func:`~agnostic_cam.demo.data.make_shapes`)."""
    return make_shapes(n, size=size, seed=seed)[0]
