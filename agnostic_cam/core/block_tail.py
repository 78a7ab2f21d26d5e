"""ViT-ReciproCAM's tail (``Capture.block()``): the graph after a pre-norm transformer block's input,
fed new values of that input (the residual stream) and of the block's first norm output.

The engine finds the block (:mod:`agnostic_cam.engine.blocks`) and cuts the graph at both tensors;
here the two tensors are read for the batch, and the tail is proven to reproduce the model's outputs
from them before a method uses it. Neutral module: the engine is only called, never imported.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agnostic_cam.errors import ModelError


@dataclass
class BlockTail:
    """``x`` (N, T, C): the block's input per image; ``norm`` (N, T, C): its first norm's output;
    ``run(x_rows, norm_rows, image)``: the model's outputs (M, K) for new values of both (M rows that
    belong to images ``image`` (M,)); ``names``: the two tensors' names in the graph."""

    x: np.ndarray
    norm: np.ndarray
    run: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    names: tuple[str, str]


class BlockTails:
    """Builds :class:`BlockTail` for a capture; the cut graph is made once per engine."""

    def __init__(self):
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, engine, src, x: np.ndarray, outputs: np.ndarray) -> BlockTail:
        if not hasattr(engine, "prenorm_block"):
            raise ModelError("ViT-ReciproCAM masks a transformer block inside the model's ONNX graph, and this model "
                             "runs as framework forward passes (its ONNX export failed); pass layer_only=True to "
                             "mask the layer's tensor alone, or make the model exportable")
        with self._lock:
            if engine not in self._cache:
                xin, norm = engine.prenorm_block(src.native_name, src.output_name)
                tail, extra = engine.tail(xin, [src.output_name], also=(norm,))
                self._cache[engine] = (xin, norm, tail, extra, engine.with_outputs([xin, norm, *extra]))
            xin, norm, tail, extra, head = self._cache[engine]
        vals = head.run(x, [xin, norm, *extra])
        given = dict(zip(extra, vals[2:]))

        def run(a: np.ndarray, b: np.ndarray, image: np.ndarray) -> np.ndarray:
            feeds = {xin: np.asarray(a, np.float32), norm: np.asarray(b, np.float32)}
            feeds.update({k: v[np.asarray(image)] for k, v in given.items()})
            return tail.run(feeds, [src.output_name])[0]

        got, ref = run(vals[0], vals[1], np.arange(len(x))), np.asarray(outputs)
        if got.shape != ref.shape or np.abs(got - ref).max() > 1e-3 * (np.abs(ref).max() + 1e-6):
            raise ModelError(f"the graph after the transformer block at {src.native_name!r} does not reproduce the "
                             "model's outputs from the block's input and norm output; pass layer_only=True")
        return BlockTail(vals[0], vals[1], run, (xin, norm))
