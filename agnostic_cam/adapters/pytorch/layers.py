"""Reading a PyTorch model's layers: one probe forward pass records every module's output shape
and the order leaf modules ran in, which tells each layer tensor's layout where the model says it
(see :func:`agnostic_cam.core.layout_detect.detect_layer_layout`) and gives the candidate-layer listing.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from agnostic_cam.core import layout as L
from agnostic_cam.core import layout_detect as LD
from agnostic_cam.errors import LayoutError

# Leaf modules that keep their input's shape and layout: looked through when asking "what made this tensor".
_ELEMENTWISE = {"ReLU", "ReLU6", "GELU", "SiLU", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid", "LeakyReLU", "ELU",
                "Mish", "Softplus", "Dropout", "Dropout2d", "Identity", "StochasticDepth", "DropPath", "PReLU",
                "CELU", "SELU", "QuickGELU"}
_CHANNELS_FIRST = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                   nn.AdaptiveMaxPool2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm, nn.Upsample,
                   nn.Conv1d, nn.AvgPool1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d,
                   nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d,
                   nn.AdaptiveMaxPool3d, nn.InstanceNorm3d)


@dataclass
class Probe:
    """What one forward pass of a zero image saw: output shape per module name, the leaf modules in
    the order they finished, and the index in that order at which each module finished."""

    input_hw: tuple[int, int]
    shapes: dict[str, tuple] = field(default_factory=dict)
    leaves: list[tuple[nn.Module, tuple]] = field(default_factory=list)
    done_at: dict[str, int] = field(default_factory=dict)
    modules: dict[str, nn.Module] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # forward calls per module (reused modules: > 1)
    sums: dict[str, tuple] = field(default_factory=dict)  # (sum, sum of |x|) of each module's last output
    reads: dict[str, list] = field(default_factory=dict)  # modules reading maps of several sizes: (id, print) of each
    gives: dict[str, list] = field(default_factory=dict)  # ... and of the maps they return
    ids: dict[str, int] = field(default_factory=dict)  # id() of each module's last output (with sums: which map)
    output: object = None  # what the model returned

    @property
    def grids(self) -> list[tuple[int, ...]]:
        """(h, w) of every convolution output: patch embeddings give a ViT's token grid ((t, h, w) of 3-D
        convolutions: a video transformer's tubelet grid)."""
        return [tuple(s[2:]) for m, s in self.leaves
                if (isinstance(m, nn.Conv2d) and len(s) == 4) or (isinstance(m, nn.Conv3d) and len(s) == 5)]

    def hint(self, name: str) -> str | None:
        """'channels_first' / 'channels_last' when the op that made ``name``'s tensor says so."""
        shape = self.shapes.get(name)
        end = self.done_at.get(name)
        if shape is None or end is None:
            return None
        for m, s in reversed(self.leaves[:end + 1]):
            if type(m).__name__ in _ELEMENTWISE:
                continue
            if s != shape:
                return None
            if isinstance(m, _CHANNELS_FIRST):
                return "channels_first"
            if isinstance(m, nn.LayerNorm) and tuple(m.normalized_shape) == (shape[-1],):
                return "channels_last"
            if isinstance(m, nn.Linear) and m.out_features == shape[-1]:
                return "channels_last"
            return None
        return None

    def layout(self, name: str, given: L.LayerLayout | None = None) -> L.LayerLayout:
        return LD.resolve_layer_layout(given, self.shapes[name], self.input_hw, self.hint(name), self.grids, name)


def fingerprint(t: torch.Tensor) -> tuple:
    """(sum, sum of |t|) in float64: equal for equal tensors, tells input-dependent tensors from others."""
    d = t.detach().double()
    return (float(d.sum()), float(d.abs().sum()))


def feature_maps(obj, depth: int = 3) -> list:
    """The rank-4 float tensors in ``obj`` (a tensor, or lists / tuples / dicts of them, a few levels deep)."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.ndim == 4 and obj.is_floating_point() else []
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return [t for v in items for t in feature_maps(v, depth - 1)] if depth > 0 else []


def probe(model: nn.Module, x: torch.Tensor) -> Probe:
    """Run ``model`` on ``x`` (no grad; caller restores modes) recording shapes and leaf order."""
    p = Probe(tuple(x.shape[2:]))
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue
        p.modules[name] = m
        leaf = next(m.children(), None) is None

        def hook(mod, i, o, name=name, leaf=leaf):
            maps = feature_maps(i)
            if len({tuple(t.shape[2:]) for t in maps}) > 1:  # a multi-level reader (a detection head, an FPN)
                p.reads[name] = [(id(t), fingerprint(t)) for t in maps]
                p.gives[name] = [(id(t), fingerprint(t)) for t in feature_maps(o)]
            if not isinstance(o, torch.Tensor):
                return
            p.shapes[name] = tuple(o.shape)
            p.calls[name] = p.calls.get(name, 0) + 1
            p.sums[name] = fingerprint(o)
            p.ids[name] = id(o)
            if leaf:
                p.leaves.append((mod, tuple(o.shape)))
            p.done_at[name] = len(p.leaves) - 1

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            p.output = model(x)
    finally:
        for h in handles:
            h.remove()
    return p


def _inside_attention(name: str, modules: dict[str, nn.Module]) -> bool:
    """True for a module strictly inside an attention block (per-head q/k/v tensors, norms of them)."""
    parts = name.split(".")
    for k in range(1, len(parts)):
        parent = modules.get(".".join(parts[:k]))
        kind = type(parent).__name__.lower() if parent is not None else ""
        block = any(w in kind for w in ("block", "layer", "residual", "stage", "encoder"))  # holds attention and more
        if parent is not None and (("attention" in kind and not block) or parts[k - 1] in ("attn", "attention")):
            return True
    return False


def candidates(p: Probe) -> list[L.Candidate]:
    """Layers worth explaining: tensors of rank 3, 4 or 5 with a spatial extent, in execution order;
    layout None where it cannot be told (pass ``layer_layout=``). Never per-head attention tensors."""
    out = []
    for name in sorted(p.shapes, key=lambda n: p.done_at.get(n, -1)):
        shape = p.shapes[name]
        if len(shape) not in (3, 4, 5) or _inside_attention(name, p.modules):
            continue
        try:
            lay = p.layout(name)
        except LayoutError:
            lay = None
        if lay is not None:
            if int(np.prod(lay.chw_shape(shape)[2:])) <= 1:
                continue
        elif len(shape) != 4:
            continue  # rank-3 / rank-5 tensors that are not a token grid / a volume map are not image layers
        out.append(L.Candidate(name, type(p.modules[name]).__name__, shape, None if lay is None else str(lay)))
    return out


@contextlib.contextmanager
def no_mha_fastpath():
    """Export with ``nn.MultiheadAttention``'s inference fast path off: its fused kernel
    (``aten::_native_multi_head_attention``) has no ONNX form, the regular path computes the same."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)
