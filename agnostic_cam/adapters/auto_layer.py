"""The automatic target layer: the last spatial feature map before global pooling.

``Explainer.from_torch(model)`` and ``from_keras(model)`` without a ``target_layer`` pick, like
torchcam's ``locate_candidate_layer``, the layer whose output comes last in the forward pass among
those that are still a spatial map ``(N, C, h, w)`` / ``(N, h, w, C)`` with more than one position.
For a CNN classifier that is the feature extractor's output, just before global pooling or
flattening (``"layer4"`` in a ResNet, ``"features"`` in a DenseNet, MobileNet or EfficientNet).
``from_onnx`` applies the same rule to the graph's tensors (:func:`~agnostic_cam.adapters.onnx.layers.default_layer`).

Differences from torchcam, both on purpose: the model itself (a fully convolutional model whose
output is a map) is never picked, and neither is a module called more than once per forward pass
(a reused ``nn.ReLU``), whose activation would be ambiguous.

PyTorch is imported inside the functions, so this module imports without it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

from agnostic_cam.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_SIZE = 224  # the side torchcam assumes when the input size is not known


def has_extent(shape: tuple, spatial: tuple[int, int]) -> bool:
    """True for a rank-4 ``shape`` whose spatial dims (``spatial`` axes) hold more than one position;
    unknown (None) dims count as spatial."""
    if len(shape) != 4:
        return False
    dims = [shape[a] for a in spatial]
    return any(d is None for d in dims) or dims[0] * dims[1] > 1


def last_spatial(records: Iterable[tuple[str, tuple]], spatial: tuple[int, int] = (2, 3)) -> str | None:
    """The name of the last record ``(name, output shape)`` with a spatial extent (forward order)."""
    pick = None
    for name, shape in records:
        if has_extent(tuple(shape), spatial):
            pick = name
    return pick


def torch_output_shapes(model, sample_shape: tuple[int, ...]) -> list[tuple[str, tuple]]:
    """``(module name, output shape)`` of every named submodule, in the order their forward calls
    finish, for one zero input of per-image ``sample_shape``; modules that return no tensor are left
    out, the model's state is restored. Raises :class:`ModelError` when the model fails on the input."""
    import torch

    from agnostic_cam.adapters.pytorch.primitives import preserved
    from agnostic_cam.core.concurrency import model_lock

    records: list[tuple[str, tuple]] = []

    def record(name):
        return lambda mod, i, o: records.append((name, tuple(o.shape))) if isinstance(o, torch.Tensor) else None

    lock = model_lock(model)  # hooks and forward of one thread at a time (README, "Guarantees")
    lock.acquire()
    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with preserved(model), torch.no_grad():
            p = next(model.parameters(), None)
            x = torch.zeros((1, *sample_shape), dtype=p.dtype if p is not None else torch.float32,
                            device=p.device if p is not None else "cpu")
            try:
                model(x)
            except Exception as e:  # noqa: BLE001 - any failure of the user's model on this input
                raise ModelError(f"the model failed on an input of shape {(1, *sample_shape)}: {e}. "
                                 "Check input_shape (C, H, W)") from None
    finally:
        for h in handles:
            h.remove()
        lock.release()
    return records


def _guess_sample_shape(model) -> tuple[int, int, int]:
    """(C, 224, 224) with C the first convolution's input channels (3 without one)."""
    from torch import nn

    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return (conv.in_channels if conv is not None else 3, DEFAULT_SIZE, DEFAULT_SIZE)


def torch_default_layer(model, sample_shape: tuple[int, ...] | None = None) -> str:
    """The dotted name of ``model``'s last spatial layer, found with one zero input of
    ``sample_shape`` (C, H, W); without it (C, 224, 224), C from the first convolution."""
    guessed = sample_shape is None
    shape = _guess_sample_shape(model) if guessed else tuple(sample_shape)
    try:
        records = torch_output_shapes(model, shape)
    except ModelError as e:
        if not guessed:
            raise
        raise ModelError(f"target_layer=None: to find the last spatial layer the model runs once on a zero image, "
                         f"but it failed on the guessed shape {(1, *shape)} ({e}). Pass input_shape=(C, H, W) "
                         "or a target_layer") from None
    calls: dict[str, int] = {}
    for name, _ in records:
        calls[name] = calls.get(name, 0) + 1
    pick = last_spatial((n, s) for n, s in records if calls[n] == 1)
    if pick is None:
        raise ModelError(f"target_layer=None: no module of the model outputs a spatial (N, C, h, w) map with more than "
                         f"one position on an input of shape {(1, *shape)}; pass a target_layer (or larger images "
                         "via input_shape)")
    log.info("target layer %r picked automatically (last spatial layer before global pooling)", pick)
    return pick


def keras_default_layer(chains: list[tuple], static_shape) -> tuple:
    """The chain (outer model's layer, ..., layer) of the last layer, in graph order, whose static
    output shape is a spatial (N, h, w, C) map; ``static_shape(layer)`` gives a shape or None."""
    by_id = {id(c): c for c in chains}
    pick = last_spatial((id(c), static_shape(c[-1]) or ()) for c in chains)
    if pick is None:
        raise ModelError("target_layer=None: no layer of the model outputs a spatial (N, h, w, C) map with more than "
                         "one position; pass a target_layer")
    chain = by_id[pick]
    log.info("target layer %r picked automatically (last spatial layer before global pooling)",
             "/".join(ly.name for ly in chain))
    return chain
