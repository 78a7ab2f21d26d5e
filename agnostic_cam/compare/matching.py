"""Which layer of model A is which layer of model B, for two models of one architecture (a port,
an export, a quantized twin).

Each model lists its candidate layers (``Explainer.layers()``: spatial maps, in forward order).
Three ways to pair them, tried in this order:

1. ``mapping``: the user's {layer of A: layer of B};
2. by order (:func:`align`): a sequence alignment (longest common subsequence, weighted) of the two
   lists in which two layers may pair only when their maps have one (C, h, w) shape and they are
   the same kind of layer (convolution, normalisation, activation, pooling, addition) or their
   names share an ending (``features.conv1``, ``conv1`` and ``/features/conv1/Conv_output_0`` all
   end in ``conv1``); equal names pair first. The order is kept, so a layer missing on one side (a
   batch norm folded into the convolution, a container module, a quantized graph's extra tensors)
   is skipped, not paired with its neighbour. A module called twice (torchvision's ResNet blocks
   reuse one ``relu``) shows its last call in PyTorch: its pair may differ there and agree again
   after, which ``first_over`` shows and ``first_split`` does not count.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from agnostic_cam.errors import InputError

_KINDS = (("conv", "conv"), ("gemm", "conv"), ("matmul", "conv"), ("norm", "norm"), ("relu", "act"),
          ("activation", "act"), ("sigmoid", "act"), ("silu", "act"), ("gelu", "act"), ("swish", "act"),
          ("clip", "act"), ("pool", "pool"), ("add", "add"), ("concat", "concat"))


@dataclass(frozen=True)
class Spot:
    """One candidate layer: its ``name`` (what the explainer takes), ``op`` (op or class name),
    ``shape`` (C, h, w) of its map, and its position in the list."""

    name: str
    op: str
    shape: tuple
    index: int


def kind(op: str) -> str:
    """A layer's coarse kind from its op / class name ('Conv2d', 'Conv', 'ReLU', 'Relu'...)."""
    low = (op or "").lower()
    return next((k for key, k in _KINDS if key in low), "other")


def module_path(name: str) -> list[str]:
    """A layer name as its module path: ``/layer1/layer1.0/relu_1/Relu_output_0`` (a PyTorch export's
    tensor), ``layer1.0.relu`` (the module) -> [layer1, 0, relu]; a repeated call's ``_1`` and the
    ONNX op's ``<Op>_output_0`` part are dropped."""
    parts = [p for p in re.split(r"[/:]+", name) if p]
    if len(parts) > 1 and re.match(r"^[A-Za-z]+_output_\d+", parts[-1]):
        parts = parts[:-1]
    path = ""
    for p in parts:
        p = re.sub(r"_\d+$", "", p)
        path = p if path and p.startswith(path + ".") else (f"{path}.{p}" if path else p)
    return path.lower().split(".")


def name_score(a: str, b: str) -> float:
    """How alike two layer names are: 1 when equal, else the share of their module paths' common
    ending (``features.conv1`` / ``conv1``: 0.5)."""
    if a == b:
        return 1.0
    pa, pb = module_path(a), module_path(b)
    k = 0
    while k < min(len(pa), len(pb)) and pa[-1 - k] == pb[-1 - k]:
        k += 1
    return k / max(len(pa), len(pb))


def chw(shape, layout) -> tuple | None:
    """A listed layer's map shape as (C, h, w), or None when it is not a channel-first/last map."""
    s = tuple(shape)
    if len(s) != 4 or layout not in ("NCHW", "NHWC"):
        return None
    return tuple(s[1:]) if layout == "NCHW" else (s[3], s[1], s[2])


def spots(explainer) -> list[Spot]:
    """The explainer's candidate layers that hold (C, h, w) maps, in the listed order."""
    out = []
    for ly in explainer.layers():
        shape = chw(ly.shape, getattr(ly, "layout", None))
        if shape is not None:
            out.append(Spot(str(ly.name), str(getattr(ly, "op_type", "") or ""), shape, len(out)))
    return out


def _score(a: Spot, b: Spot) -> float:
    """0 (may not pair) unless the maps have one shape and the layers share their kind or part of
    their name; equal names score highest."""
    if a.shape != b.shape:
        return 0.0
    if a.name == b.name:
        return 6.0
    s = float(kind(a.op) == kind(b.op)) + 2.0 * name_score(a.name, b.name)
    return 0.5 + s if s > 0 else 0.0


def align(a: list[Spot], b: list[Spot]) -> list[tuple[Spot, Spot]]:
    """The order-keeping pairing of ``a`` and ``b`` with the highest total :func:`_score`."""
    n, m = len(a), len(b)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            s = _score(a[i], b[j])
            best[i][j] = max(best[i + 1][j], best[i][j + 1], best[i + 1][j + 1] + s if s else 0.0)
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        s = _score(a[i], b[j])
        if s and best[i][j] == best[i + 1][j + 1] + s:
            pairs.append((a[i], b[j]))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            i += 1
        else:
            j += 1
    return pairs


def match_layers(ex_a, ex_b, mapping: dict | None = None) -> tuple[list[tuple[Spot, Spot]], str]:
    """Pairs of (layer of A, layer of B) in A's order, and how they were found ('mapping' / 'order')."""
    sa, sb = spots(ex_a), spots(ex_b)
    if mapping:
        by_a, by_b = {s.name: s for s in sa}, {s.name: s for s in sb}
        pairs = []
        for ka, kb in mapping.items():
            for side, key, known in (("A", ka, by_a), ("B", kb, by_b)):
                if key not in known:
                    from agnostic_cam.adapters.base import closest_names

                    raise InputError(f"mapping names layer {key!r} of model {side}, which has no such spatial layer; "
                                     f"closest: {closest_names(key, list(known))}")
            pairs.append((by_a[ka], by_b[kb]))
        return sorted(pairs, key=lambda p: p[0].index), "mapping"
    pairs = align(sa, sb)
    if not pairs:
        raise InputError("no layer of the two models has a map of the same (C, h, w) shape: are they the same "
                         "architecture? Pass mapping={layer of A: layer of B}")
    return pairs, "order"
