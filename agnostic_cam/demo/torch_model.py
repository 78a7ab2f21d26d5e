"""The demo CNN in PyTorch and its few-second training on synthetic shapes."""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agnostic_cam.demo.data import CLASSES, make_shapes

log = logging.getLogger(__name__)

TARGET_LAYER = "features.relu3"


def demo_net(num_classes: int = len(CLASSES)) -> nn.Module:
    """Three conv-BN-ReLU blocks, global average pool, linear head (so CAM applies). Input (N, 3, 64, 64)."""
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 16, 3, padding=1)), ("bn1", nn.BatchNorm2d(16)), ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("bn2", nn.BatchNorm2d(32)), ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
            ("conv3", nn.Conv2d(32, 64, 3, padding=1)), ("bn3", nn.BatchNorm2d(64)), ("relu3", nn.ReLU()),
        ]))),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(64, num_classes)),
    ]))


def train_demo_net(n: int = 1200, epochs: int = 4, seed: int = 0, verbose: bool = False) -> nn.Module:
    """Train :func:`demo_net` on synthetic shapes; deterministic for a seed (a few seconds on 2 cores)."""
    torch.manual_seed(seed)
    x, y, _ = make_shapes(n, seed=seed)
    model = demo_net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        for lo in range(0, n, 32):
            idx = perm[lo:lo + 32]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        if verbose:
            log.info("  epoch %d/%d: loss %.3f", ep + 1, epochs, loss.item())
    opt.zero_grad(set_to_none=True)  # as a model loaded from the cache: no .grad left from the last step
    return model.eval()


def accuracy(model: nn.Module, n: int = 200, seed: int = 123) -> float:
    x, y, _ = make_shapes(n, seed=seed)
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def cache_dir() -> Path:
    return Path(os.environ.get("AGNOSTIC_CAM_CACHE", Path.home() / ".cache" / "agnostic-cam"))


def training_key() -> str:
    """Hash of the code that makes the demo model (architecture, training, data), of the torch
    version and of the CPU kernels torch dispatches to (the trained weights differ between AVX2 and
    AVX-512 kernels): a cached copy made otherwise is never used (it gets another file name)."""
    from agnostic_cam.demo import data

    src = inspect.getsource(demo_net) + inspect.getsource(train_demo_net) + inspect.getsource(data)
    src += torch.__version__ + torch.backends.cpu.get_cpu_capability()
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def load_demo_net(verbose: bool = False) -> nn.Module:
    """The trained demo model, from the local cache (keyed by :func:`training_key`, which the file
    also records and is checked on load) or trained now (and cached)."""
    key = training_key()
    path = cache_dir() / f"demo_net_{key}.pt"
    model = demo_net()
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("training_key") == key:
                model.load_state_dict(saved["state"])
                return model.eval()
        except Exception:  # noqa: BLE001 - a stale or corrupt cache is simply retrained
            pass
    model = train_demo_net(verbose=verbose)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"training_key": key, "state": model.state_dict()}, tmp)
    os.replace(tmp, path)
    return model


def numpy_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The demo model's parameters as NumPy arrays (for building twins in other frameworks)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
