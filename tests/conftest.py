"""Shared fixtures: seeded torch models (no downloads) and small inputs."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def torch():
    import torch

    torch.set_num_threads(2)
    return torch


@pytest.fixture(scope="session")
def resnet18(torch):
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="session")
def small_cnn(torch):
    """A custom CNN with an in-place ReLU, F.relu in forward and a GAP + linear head."""
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.act1 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.conv3 = nn.Conv2d(16, 24, 3, padding=1)
            self.act3 = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(24, 5)

        def forward(self, x):
            x = self.act1(self.conv1(x))
            x = nn.functional.relu(self.bn2(self.conv2(x)))
            x = self.act3(self.conv3(x))
            return self.fc(self.pool(x).flatten(1))

    torch.manual_seed(1)
    m = SmallCNN().eval()
    with torch.no_grad():  # non-trivial BN statistics
        m.bn2.running_mean.uniform_(-0.2, 0.2)
        m.bn2.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="session")
def demo_model():
    from agnostic_cam.demo.torch_model import load_demo_net

    return load_demo_net()


@pytest.fixture(scope="session")
def onnx_net32(tmp_path_factory, torch):
    """The audits' 32 px ONNX CNN (onnx_helpers.torch_net(seed=4)), exported once per session and
    shared read-only by the audit test modules (each exported its own copy before)."""
    import onnx

    from onnx_helpers import export_torch, torch_net

    p = tmp_path_factory.mktemp("onnx_net32") / "net.onnx"
    onnx.save(export_torch(torch_net(seed=4), 32), str(p))
    return p


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
