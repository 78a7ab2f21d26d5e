"""A tiny seeded 3-D CNN (PyTorch, with its Keras ``Conv3D`` twin) and synthetic volumes, for the
examples and tests of volumes and clips (N, C, D, H, W).

Untrained (random weights from a fixed seed): building it takes milliseconds and every example gives
the same numbers on every machine. Needs PyTorch; the twin needs Keras.

    >>> from agnostic_cam import Explainer
    >>> from agnostic_cam.demo.volume import tiny_cnn3d, tiny_volumes
    >>> ex = Explainer.from_torch(tiny_cnn3d(), "relu2", progress=False)
    >>> ex.explain(tiny_volumes(), method="gradcam").heatmap.shape
    (2, 8, 32, 32)
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

VOLUME_LAYER = "relu2"  # (N, 16, 4, 16, 16) at 8 x 32 x 32 inputs


def tiny_cnn3d(num_classes: int = 4, seed: int = 4, channels: int = 1) -> nn.Module:
    """conv3d(channels->8)-ReLU-maxpool, conv3d(8->16)-ReLU (``"relu2"``), global average pool, linear
    head, in eval mode. Input (N, channels, D, H, W), e.g. 1 x 8 x 32 x 32. The weights come from
    ``seed`` without touching PyTorch's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(OrderedDict([
            ("conv1", nn.Conv3d(channels, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool3d(2)),
            ("conv2", nn.Conv3d(8, 16, 3, padding=1)), ("relu2", nn.ReLU()),
            ("pool", nn.AdaptiveAvgPool3d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(16, num_classes)),
        ])).eval()


def keras_cnn3d(torch_model: nn.Module, size: tuple[int, int, int] = (8, 32, 32)):
    """The Keras twin of :func:`tiny_cnn3d` (channels-last input (N, D, H, W, C)), carrying
    ``torch_model``'s weights: same layer names, same numbers."""
    import keras
    from keras import layers

    w = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    x = inp = keras.Input((*size, w["conv1.weight"].shape[1]), name="input")
    x = layers.Conv3D(8, 3, padding="same", name="conv1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling3D(2, name="pool1")(x)
    x = layers.Conv3D(16, 3, padding="same", name="conv2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling3D(name="pool")(x)
    out = layers.Dense(w["fc.weight"].shape[0], name="fc")(x)
    model = keras.Model(inp, out, name="tiny_cnn3d")
    for name in ("conv1", "conv2"):  # (O, I, kd, kh, kw) -> (kd, kh, kw, I, O)
        model.get_layer(name).set_weights([w[f"{name}.weight"].transpose(2, 3, 4, 1, 0), w[f"{name}.bias"]])
    model.get_layer("fc").set_weights([w["fc.weight"].T, w["fc.bias"]])
    return model


def tiny_volumes(n: int = 2, size: tuple[int, int, int] = (8, 32, 32), channels: int = 1, seed: int = 0) -> np.ndarray:
    """``n`` synthetic volumes (n, channels, D, H, W) float32 in [0, 1]: a bright ball at a random
    place on a faint noisy background."""
    rng = np.random.default_rng(seed)
    d, h, w = size
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    out = 0.1 * rng.random((n, channels, d, h, w))
    for i in range(n):
        c = rng.uniform(0.25, 0.75, 3) * np.array(size)
        r = rng.uniform(0.15, 0.3) * min(h, w)
        ball = ((z - c[0]) * (h / d)) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
        out[i, :, ball] += 0.8
    return np.clip(out, 0, 1).astype(np.float32)
