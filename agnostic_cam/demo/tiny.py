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


class _Block(nn.Module):
    """Pre-norm transformer block; attention through ``F.scaled_dot_product_attention`` (no
    attention tensor exists in eager PyTorch: attention methods read it from the ONNX export)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, c)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """8 x 8 patches, a class token, ``depth`` blocks, final norm, linear head on the class token."""

    def __init__(self, num_classes: int = 4, dim: int = 32, depth: int = 2, heads: int = 2, size: int = 32):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 1 + (size // 8) ** 2, dim) * 0.5)
        self.blocks = nn.Sequential(*[_Block(dim, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def tiny_vit(num_classes: int = 4, seed: int = 5) -> nn.Module:
    """A two-block ViT for 32 x 32 inputs (a class token and a 4 x 4 patch grid, SDPA attention),
    random weights from ``seed`` (PyTorch's global random state untouched), in eval mode.

        >>> ex = Explainer.from_torch(tiny_vit(), "blocks.1", input_shape=(3, 32, 32), progress=False)
        >>> ex.explain(tiny_images(), method="attention_rollout").raw.shape
        (2, 4, 4)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyViT(num_classes).eval()
