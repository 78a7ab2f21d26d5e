"""The Keras side of the automatic target layer: the functional graph's layers turned into the
framework-neutral records that :func:`agnostic_cam.adapters.auto_layer.choose` (the one rule every
framework uses) reads.

Per layer, in graph order: its static output shape and layout
(:func:`~agnostic_cam.adapters.keras.layers.chain_layout`: channels-last maps, token grids);
main path unless it is shared (several outputs, an ambiguous activation) or a rank-4 tensor that is no
map of the image (per-head (N, T, heads, d) tensors); in the head when it returns the explained
output itself (a fully convolutional model's last layer); reached unless the explained output's
gradient reaches at most one of its positions (a class-token ViT's last block after its attention,
read only at the class token), measured for token tensors only, with one backward pass.
"""
from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from agnostic_cam.adapters.auto_layer import choose, record
from agnostic_cam.adapters.keras.layers import chain_layout, model_grids
from agnostic_cam.core import layout as L

log = logging.getLogger("agnostic_cam.adapters.auto_layer")


def keras_pick(adapter) -> tuple[tuple | None, str]:
    """(chain of the automatic target layer or None, why) of a :class:`KerasAdapter`."""
    hw = adapter._input_hw()
    grids = model_grids(adapter._chains, lambda c: adapter._static_shape(c[-1]) or ())
    memo: dict = {}
    rows = []
    for c in adapter._chains:
        shape = adapter._static_shape(c[-1])
        lay = None if shape is None else chain_layout(c[-1], shape, hw, grids, memo)
        per_head = shape is not None and len(shape) == 4 and lay is None
        rows.append((c, shape or (), lay, shape is not None and not per_head))
    tokens = [(c, lay) for c, shape, lay, main in rows if main and lay is not None and lay.kind == L.TOKENS]
    reached = _reached(adapter, tokens, hw) if tokens else {}
    head = adapter.selection.tensor
    records = [record(str(i), shape, lay, main_path=main, in_head=_output_of(c[-1]) is head,
                      reached=reached.get(id(c), True)) for i, (c, shape, lay, main) in enumerate(rows)]
    name, why = choose(records)
    if name is None:
        return None, f"target_layer=None: {why}; pass a target_layer (ex.layers() lists candidates)"
    chain = rows[int(name)][0]
    log.info("target layer %r picked automatically (%s)", "/".join(ly.name for ly in chain), why)
    return chain, why


def _output_of(op):
    try:
        return op.output
    except (AttributeError, ValueError):
        return None


def _reached(adapter, tokens: list, hw) -> dict[int, bool]:
    """id(chain) -> whether a random projection of the explained output has a gradient at more than
    one grid position of that token tensor (eager, on one noise image of the model's input size).
    Empty (no filtering) when the input size is unknown or the model cannot be differentiated."""
    if hw is None:
        return {}
    x = tf.constant(np.random.default_rng(0).normal(size=(1, *adapter.input_shape[1:])).astype(np.float32))
    try:
        with tf.GradientTape() as tape:
            tape.watch(x)
            out, vals, _ = adapter._evaluate(x, [c for c, _ in tokens])
            r = tf.constant(np.random.default_rng(1).normal(size=tuple(out.shape)).astype(np.float32))
            score = tf.reduce_sum(tf.cast(out, tf.float32) * r)
        grads = tape.gradient(score, vals)
    except Exception:  # noqa: BLE001 - not differentiable here: no filtering (the pick is still checked later)
        return {}
    seen = {}
    for (c, lay), g in zip(tokens, grads):
        chw = np.zeros(1) if g is None else lay.to_chw(np.asarray(g, np.float32))
        seen[id(c)] = bool(chw.ndim == 4 and (np.abs(chw).sum(axis=1) > 0).sum() > len(chw))
    return seen
