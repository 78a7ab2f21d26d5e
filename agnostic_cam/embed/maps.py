"""The raw maps of the embeddable methods, as ONNX ops on the layer's channel-first tensor.

Each builder returns (map (N, 1, h, w), per-class maps (N, K, h, w) or None) for the target class
``ctx.classes`` (the top-1 class of the explained output, as ``explain(target=None)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from agnostic_cam.embed.graph import Branch
from agnostic_cam.embed.heads import linear_head
from agnostic_cam.errors import OptionError


@dataclass
class Context:
    """What a builder reads: the branch, the graph and the layer's tensors."""

    b: Branch
    model: onnx.ModelProto
    chw: str                      # the layer's channel-first tensor (N, C, h, w)
    native: str                   # the layer's own tensor, where the tail starts
    native_shape: tuple           # its per-image shape
    channel_axis: int | None
    output: str                   # the explained output (N, K)
    shape: tuple                  # (C, h, w) of the channel-first tensor
    method: Any                   # the Python method built from the options (its settings)
    per_class: bool = False
    scores: str = ""              # the explained output in float32 (a cast of ``output`` in fp16 graphs)
    native_type: int = onnx.TensorProto.FLOAT
    _classes: str | None = field(default=None, repr=False)

    @property
    def classes(self) -> str:
        if self._classes is None:
            self._classes = self.b.op("ArgMax", [self.scores or self.output], "top1", axis=1, keepdims=0)
        return self._classes

    def class_free(self, name: str) -> None:
        if self.per_class:
            raise OptionError(f"method {name!r} does not depend on the class: per_class applies to cam, gradcam, "
                              "reciprocam and vit_reciprocam")


def activation_map(ctx: Context):
    ctx.class_free("activation_map")
    return ctx.b.reduce("ReduceMean", ctx.chw, [1], keepdims=1), None


def _cam(ctx: Context, name: str, scale: float):
    b = ctx.b
    W = linear_head(ctx.model, ctx.native, ctx.output, _spatial_axes(ctx), name) * np.float32(scale)
    w = b.const(W.astype(np.float32), "head_weights")
    sel = b.op("Gather", [w, ctx.classes], axis=0)                        # (N, C)
    cam = b.unsqueeze(b.op("Einsum", [sel, ctx.chw], equation="nc,nchw->nhw"), [1])
    per = b.op("Einsum", [w, ctx.chw], equation="kc,nchw->nkhw") if ctx.per_class else None
    return cam, per


def _spatial_axes(ctx: Context) -> tuple[int, int]:
    rank = len(ctx.native_shape) + 1
    ax = None if ctx.channel_axis is None else ctx.channel_axis % rank
    if rank == 4 and ax == 1:
        return (2, 3)
    if rank == 4 and ax == 3:
        return (1, 2)
    return (-1, -1)  # tokens: no spatial pooling of this tensor exists; linear_head refuses


def cam(ctx: Context):
    return _cam(ctx, "cam", 1.0)


def gradcam(ctx: Context):
    """Closed form on a GAP + linear head: dS/dA_c = W[k, c] / (h*w) at every position."""
    _, h, w = ctx.shape
    return _cam(ctx, "gradcam", 1.0 / (h * w))


def eigencam(ctx: Context, squarings: int = 10, refinements: int = 4):
    """First principal component by power iteration (ONNX has no SVD), signed by Eigen-CAM's rule.

    M = the (P, C) matrix of the map centred over positions. The Gram matrix of the smaller side
    (M M^T or M^T M) is squared ``squarings`` times (G^1024: the top eigenvector dominates unless the
    two largest singular values are within a factor 2^(-1/1024) ~ 0.9993), its largest column starts
    ``refinements`` plain power steps, and the projection is M v with v the unit right vector.
    """
    ctx.class_free("eigencam")
    b = ctx.b
    c, h, w = ctx.shape
    a = b.op("Reshape", [ctx.chw, b.ints([0, 0, -1])])                       # (N, C, P)
    m = b.op("Transpose", [a], perm=[0, 2, 1])                                # (N, P, C)
    m = b.op("Sub", [m, b.reduce("ReduceMean", m, [1])])
    mt = b.op("Transpose", [m], perm=[0, 2, 1])                               # (N, C, P)
    small_p = h * w <= c
    gram = _scaled(b, b.op("MatMul", [m, mt] if small_p else [mt, m]))  # scaled: tiny activations do not underflow
    s = gram
    for _ in range(squarings):
        s = _scaled(b, b.op("MatMul", [s, s]))
    idx = b.op("ArgMax", [b.reduce("ReduceSumSquare", s, [1], keepdims=0)], axis=1, keepdims=0)
    v = _column(b, s, idx)                                                    # (N, d, 1)
    for _ in range(refinements):
        v = _unit(b, b.op("MatMul", [gram, v]))
    if small_p:
        v = _unit(b, b.op("MatMul", [mt, v]))                                 # (N, C, 1)
    p = b.squeeze(b.op("MatMul", [m, v]), [2])                                # (N, P)
    p = _signed(b, p, a, h * w)
    return b.op("Reshape", [p, b.concat([b.shape(p, 0, 1), b.ints([1, h, w])])]), None


def _scaled(b: Branch, x: str) -> str:
    mx = b.reduce("ReduceMax", b.op("Abs", [x]), [1, 2])
    return b.op("Div", [x, b.op("Max", [mx, b.f32(1e-30)])])


def _unit(b: Branch, v: str) -> str:
    n = b.op("Sqrt", [b.reduce("ReduceSumSquare", v, [1])])
    return b.op("Div", [v, b.op("Max", [n, b.f32(1e-30)])])


def _column(b: Branch, s: str, idx: str) -> str:
    """(N, d, d), (N,) -> (N, d, 1): column idx[n] of s[n]."""
    i = b.unsqueeze(idx, [1, 2])
    i = b.op("Expand", [i, b.concat([b.shape(s, 0, 2), b.ints([1])])])
    return _unit(b, b.op("GatherElements", [s, i], axis=2))


def _signed(b: Branch, p: str, a: str, positions: int) -> str:
    """Eigen-CAM's sign rule (:func:`agnostic_cam.methods.projection.first_component_projection`):
    positive correlation with the channel-mean map, or where that map is flat (below 1e-5 of the
    activations' scale) the largest-magnitude value positive."""
    from agnostic_cam.methods.projection import FLAT

    mean = b.reduce("ReduceMean", a, [1], keepdims=0)                         # (N, P)
    centred = b.op("Sub", [mean, b.reduce("ReduceMean", mean, [1])])
    norm = b.op("Sqrt", [b.reduce("ReduceSumSquare", p, [1])])
    norm = b.op("Where", [b.op("Greater", [norm, b.f32(0.0)]), norm, b.f32(1.0)])
    decisive = b.op("Div", [b.reduce("ReduceSum", b.op("Mul", [p, centred]), [1]), norm])
    rms = b.op("Sqrt", [b.reduce("ReduceMean", b.op("Mul", [a, a]), [1, 2], keepdims=0)])
    thr = b.op("Mul", [rms, b.f32(FLAT * np.sqrt(positions))])
    thr = b.unsqueeze(thr, [1])
    by_mean = b.op("Less", [decisive, b.f32(0.0)])
    by_peak = b.op("Greater", [b.op("Abs", [b.reduce("ReduceMin", p, [1])]), b.reduce("ReduceMax", p, [1])])
    sure = b.op("GreaterOrEqual", [b.op("Abs", [decisive]), thr])
    flip = b.op("Or", [b.op("And", [sure, by_mean]), b.op("And", [b.op("Not", [sure]), by_peak])])
    return b.op("Where", [flip, b.op("Neg", [p]), p])
