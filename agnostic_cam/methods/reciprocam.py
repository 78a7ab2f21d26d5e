"""Recipro-CAM (Byun & Lee 2022): the target's probability when the layer keeps one position only.

For each position (i, j) of the target layer, a copy of the layer's tensor keeps that position
(every channel) and zeroes the others; the copies run through the tail of the model (the graph after
the layer) in batches, and the map at (i, j) is the softmax probability of the target class for
that copy. Forward-only, no gradient. :func:`mosaic_mask` builds the masks in the layer's own layout
(NCHW, NHWC or tokens); ViT-ReciproCAM (:mod:`agnostic_cam.methods.vit_reciprocam`) reuses it with a
Gaussian neighbourhood and the class token kept. The embedded form (``Explainer.embed``) multiplies
the same masks inside the ONNX graph.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.core.options import positive_int
from agnostic_cam.errors import LayoutError, OptionError
from agnostic_cam.methods.base import Capture, Method, Needs, register

GAUSSIAN = np.array([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]], dtype=np.float64)


def spatial_masks(h: int, w: int, gaussian: bool) -> np.ndarray:
    """(h*w, h, w): position k = i*w + j keeps (i, j) (one-hot), or its 3x3 Gaussian neighbourhood
    (weights 1/4 at the centre, 1/8 at edges, 1/16 at corners; cut at the border)."""
    m = np.zeros((h * w, h + 2, w + 2), dtype=np.float64)
    for i in range(h):
        for j in range(w):
            if gaussian:
                m[i * w + j, i:i + 3, j:j + 3] = GAUSSIAN
            else:
                m[i * w + j, i + 1, j + 1] = 1.0
    return m[:, 1:-1, 1:-1]


def mosaic_mask(native_shape: tuple, channel_axis: int | None, grid: tuple[int, int], gaussian: bool = False,
                keep_prefix: bool = False) -> np.ndarray:
    """Masks (h*w, *native_shape) float32, the channel axis of size 1, for one image's layer tensor of
    shape ``native_shape`` (no batch axis): NCHW (C, h, w), NHWC (h, w, C) or tokens (T, C) whose
    last h*w tokens are the patch grid; ``keep_prefix``: class / register tokens kept (else zeroed)."""
    h, w = grid
    sm = spatial_masks(h, w, gaussian).astype(np.float32)
    shape = tuple(native_shape)
    rank = len(shape) + 1
    ax = None if channel_axis is None else channel_axis % rank
    if rank == 4 and ax == 1 and shape[1:] == (h, w):
        return sm[:, None]
    if rank == 4 and ax == 3 and shape[:2] == (h, w):
        return sm[..., None]
    if rank == 3 and ax == 2 and shape[0] >= h * w:
        prefix = np.full((h * w, shape[0] - h * w), 1.0 if keep_prefix else 0.0, np.float32)
        return np.concatenate([prefix, sm.reshape(h * w, h * w)], axis=1)[..., None]
    raise LayoutError(f"cannot mask the layer's tensor of shape {shape} (channel axis {channel_axis}) position by "
                      f"position for a {h}x{w} map; pass layer_layout= ('NCHW', 'NHWC' or 'tokens') instead of reshape=")


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class MosaicMethod(Method):
    """Shared by Recipro-CAM and ViT-ReciproCAM: masked copies of the layer through the tail."""

    needs = Needs.ACTIVATIONS | Needs.TAIL
    gaussian = False
    keep_prefix = False
    block: bool | None = False  # mask a pre-norm block's input and norm output (ViT-ReciproCAM); None: for tokens

    def uses_block(self, native_rank: int) -> bool:
        """Whether to mask the block, for a layer tensor of ``native_rank`` (batch included; 3: tokens)."""
        return self.block if self.block is not None else native_rank == 3

    def __init__(self, softmax: bool = True, batch_size: int | None = None):
        if not isinstance(softmax, bool):
            raise OptionError(f"softmax must be True or False; got {softmax!r}")
        self.softmax = softmax
        self.batch_size = positive_int("batch_size", batch_size, optional=True)

    def compute(self, cap: Capture) -> np.ndarray:
        n, _, h, w = cap.activations.shape
        native = cap.activations if cap.native is None else cap.native
        if self.uses_block(native.ndim):  # ViT-ReciproCAM: the block's input and norm output masked alike
            blk = cap.block()
            tensors, axis, run = (blk.x, blk.norm), 2, blk.run
        else:
            tensors = (native,)
            axis, run = 1 if cap.native is None else cap.channel_axis, cap.tail
        mask = mosaic_mask(tensors[0].shape[1:], axis, (h, w), self.gaussian, self.keep_prefix)
        bs = self.batch_size or max(cap.batch_size, 64)
        hw = h * w
        out = np.empty(n * hw, dtype=np.float64)
        image = np.repeat(np.arange(n), hw)  # row r is image r // hw masked at position r % hw (the embedded order)
        with cap.progress_bar(n * hw, self.name) as bar:
            for lo in range(0, n * hw, bs):
                rows = np.arange(lo, min(lo + bs, n * hw))
                y = run(*[(t[image[rows]] * mask[rows % hw]).astype(np.float32) for t in tensors], image[rows])
                out[rows] = cap.row_scores(softmax(y) if self.softmax else y, image[rows])
                bar.update(len(rows))
        out = out.reshape(n, hw)
        self.scale = np.abs(out).max(axis=1)
        return out.reshape(n, h, w).astype(np.float32)


@register("reciprocam")
class ReciproCAM(MosaicMethod):
    """Recipro-CAM: each position scored by the target's probability when the layer keeps that position only.

    Paper: S.-Y. Byun and W. Lee, "Recipro-CAM: Fast gradient-free visual explanations for
    convolutional neural networks", arXiv:2209.14074, 2022.

    With A the target layer's tensor (N, C, h, w) and M_ij the mask that is 1 at position (i, j)
    (every channel) and 0 elsewhere, g the tail of the model after the layer and k the target class:

        cam[i, j] = softmax(g(A * M_ij))_k

    The h*w masked copies of each image run through the tail in batches (forward-only, ONNX
    Runtime). Channels-last and token layers are masked in their own layout (prefix tokens zeroed;
    ``vit_reciprocam`` keeps them). ``softmax=False`` scores the raw output instead (a model that
    already outputs probabilities, or OpenVINO XAI on a model without a softmax, which reads logits).
    The map can also be embedded in the ONNX graph (``Explainer.embed``), one batched pass.

    Args:
        softmax (bool): softmax over the tail's outputs before reading the target. Default True.
        batch_size (int | None): masked copies per tail pass; None uses max(the explainer's, 64).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="reciprocam")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
    """
