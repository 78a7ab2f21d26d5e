"""PyTorch forward passes for the export fallback (:mod:`agnostic_cam.engine.eager`)."""
from __future__ import annotations

import numpy as np
import torch

from agnostic_cam.adapters.pytorch.primitives import hooked, preserved
from agnostic_cam.errors import BackendError


def torch_forward(adapter, x: np.ndarray, replace: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(explained output (N, K), target layer's output (N, C, h, w)) of a TorchAdapter's model for
    ``x``, with the layer's output replaced by ``replace`` when given; ``torch.no_grad()``, eval
    mode, training flags restored. Without a target layer the second value is None."""
    store = []

    def hook(module, inputs, out):
        if replace is not None:
            new = torch.from_numpy(np.ascontiguousarray(replace, dtype=np.float32)).to(out.device, out.dtype)
            store.append(new)
            return new
        store.append(out.clone())  # later in-place ops must not alter what is returned
        return None

    if adapter.layer is None:  # layer-free explainer (occlusion, rise, kernelshap, lime): output only
        with preserved(adapter.model), torch.no_grad():
            out = adapter._forward(adapter._tensor(x))
        return out.detach().cpu().float().numpy(), None
    with preserved(adapter.model), torch.no_grad(), hooked(adapter.layer, hook):
        out = adapter._forward(adapter._tensor(x))
    if not store:
        raise BackendError(f"layer {adapter.layer_name!r} was not called by the model's forward pass")
    return out.detach().cpu().float().numpy(), store[-1].detach().cpu().float().numpy()
