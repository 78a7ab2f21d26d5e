"""Gradients with respect to attention probabilities, on the ONNX graph converted with onnx2torch.

The graph is given the explained output, every block's attention probabilities and (for LeGrad)
every block's own score (:func:`~agnostic_cam.adapters.onnx.attention.with_block_heads`) as outputs,
then converted: each attention tensor is a node of the converted module's autograd graph, so
d(score)/dA is one ``torch.autograd.grad`` call, whatever attention kernel the original model used.

Speed: a graph exported with a dynamic batch computes its reshapes from ``Shape`` ops at run time
(a 12-block ViT-Tiny export: 2084 nodes, about 1600 of them shape bookkeeping, each one a Python
module call in the converted graph). Per batch size the graph is first specialised: the input's
shape fixed to the batch's and ONNX Runtime's basic optimisations applied (constant folding and
removal of redundant nodes, standard ONNX operators only; what every ONNX Runtime session of the
engine runs anyway), leaving 491 nodes; a few batch sizes are kept. Where that fails (an operator
the conversion lacks after folding) the dynamic graph is converted as it is. The converted module is
then rewritten with fewer Python calls (:mod:`agnostic_cam.adapters.onnx.lean`: bit-identical, GELUs
fused back), and for LeGrad, which needs only d s_l / dA_l, the token stream is cut after every block
(:func:`add_stops`) so that one backward pass gives all blocks' gradients instead of one per block.
"""
from __future__ import annotations

import os
import tempfile
import threading
import warnings
from collections import OrderedDict

import numpy as np
import onnx

from agnostic_cam.engine.attention import with_block_heads
from agnostic_cam.adapters.onnx.lean import leaner
from agnostic_cam.adapters.onnx.torch_gradients import TorchGradients, _constants_to_initializers
from agnostic_cam.engine import graph as G
from agnostic_cam.errors import BackendError
from agnostic_cam.targets import TargetSpec

import torch

from agnostic_cam.adapters.pytorch.primitives import target_scores


class AttentionGradients:
    """The converted graph with outputs [output, A_1..A_L, (s_1..s_L)] for attention tensors ``names``
    and, with ``blocks`` (their block outputs) and ``last`` (the last block's output), per-block scores.
    ``final=False``: calls never ask for d(score)/dA (only the block gradients), which lets the block
    gradients share one backward pass."""

    def __init__(self, model: onnx.ModelProto, output: str, names: list[str], blocks: list[str] | None = None,
                 last: str | None = None, final: bool = True):
        self.names = list(names)
        self.final = final  # False: d(score)/dA is never asked for, so block scores may share one backward pass
        heads: list[str] = []
        if blocks is not None:
            model, heads = with_block_heads(model, output, blocks, last)
        outs = [output, *self.names, *heads]
        m = G.with_outputs(model, outs)
        _constants_to_initializers(m)
        keep = {o.name: o for o in m.graph.output}
        G.replace_repeated(m.graph.output, [keep[o] for o in outs])
        self._graph = m
        self.per_block = bool(heads)
        inits = {i.name for i in model.graph.initializer}
        shape = G.tensor_shape(next(i for i in model.graph.input if i.name not in inits)) or ()
        self.fixed_batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
        self._modules: OrderedDict = OrderedDict()  # input shape -> converted module (most recent last)
        self._lock = threading.Lock()

    MAX_SHAPES = 2  # a batch size and the last, smaller chunk; each module holds its own copy of the weights

    def module_for(self, shape: tuple):
        """The converted graph specialised to inputs of ``shape`` (see the module doc)."""
        shape = tuple(shape)
        with self._lock:
            return self._module_for(shape)

    def _module_for(self, shape: tuple):
        mod = self._modules.pop(shape, None)
        if mod is None:
            try:
                mod = TorchGradients._convert(specialised(self._graph, shape))
                stops = self._stops(mod)
                mod = leaner(mod, torch.from_numpy(np.random.default_rng(0).standard_normal(shape, dtype=np.float32)))
                mod.agnostic_cam_stops = stops
            except Exception:  # noqa: BLE001 - ORT or the conversion refused the folded graph: convert it as is
                mod = self._modules.get("dynamic")
                if mod is None:
                    mod = TorchGradients._convert(self._graph)
                    mod.agnostic_cam_stops = self._stops(mod)
                self._modules["dynamic"] = mod
        self._modules[shape] = mod
        while len(self._modules) > self.MAX_SHAPES:
            self._modules.popitem(last=False)
        return mod

    def _stops(self, mod) -> bool:
        """Stops (:func:`add_stops`) in the converted module where only block scores are asked for."""
        return self.per_block and not self.final and add_stops(mod, len(self.names))

    def __call__(self, x: np.ndarray, target: TargetSpec, final: bool = True) -> dict:
        """Forward and backward for the batch ``x`` (N, ...): outputs (N, K), scores (N,), classes,
        maps [(N, heads, T, T)], grads [d score / dA_l] (``final``) and block_grads [d s_l / dA_l].
        A graph with a fixed batch size runs in chunks of that size (the last one padded)."""
        bs = self.fixed_batch or x.shape[0]
        if bs == x.shape[0]:
            return self._run(x, target, final)
        parts = []
        for lo in range(0, x.shape[0], bs):
            c = x[lo:lo + bs]
            m = c.shape[0]
            c = np.concatenate([c, np.repeat(c[-1:], bs - m, axis=0)]) if m < bs else c
            fixed = None if target.fixed is None else np.concatenate(
                [target.fixed[lo:lo + m], np.repeat(target.fixed[lo + m - 1:lo + m], bs - m)])
            parts.append((m, self._run(c, TargetSpec(target.fn if fixed is None else fixed, bs), final)))

        def cat(key):
            vals = [p[key] for _, p in parts]
            if vals[0] is None:
                return None
            if isinstance(vals[0], list):
                return [np.concatenate([v[i][:m] for (m, _), v in zip(parts, vals)]) for i in range(len(vals[0]))]
            return np.concatenate([v[:m] for (m, _), v in zip(parts, vals)])

        return {k: cat(k) for k in parts[0][1]}

    def _run(self, x: np.ndarray, target: TargetSpec, final: bool) -> dict:
        if torch.is_inference_mode_enabled():
            raise BackendError("cannot compute attention gradients inside torch.inference_mode(); call explain() outside it")
        k = len(self.names)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="onnx2torch")
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
            mod = self.module_for(x.shape)
            res = mod(xt)
            res = list(res) if isinstance(res, (tuple, list)) else [res]
            out, maps, heads = res[0], res[1:1 + k], res[1 + k:]
            out_np = out.detach().numpy().astype(np.float32)
            classes = target.indices(out_np)
            scores = target_scores(out, classes, target)
            unused = [i for i, a in enumerate(maps) if not a.requires_grad]
            if unused:
                raise BackendError(f"the score does not depend on attention tensor(s) {[self.names[i] for i in unused]}")
            grads = block = None
            if final:
                if self.per_block and not self.final:
                    raise BackendError("internal: this gradient graph was built for block scores only")
                grads = _arrays(maps, torch.autograd.grad(scores.sum(), maps, retain_graph=self.per_block,
                                                          allow_unused=True))
            if self.per_block:
                block_scores = [target_scores(s, classes, target).sum() for s in heads]
                if getattr(mod, "agnostic_cam_stops", False):  # one backward pass gives every d s_l / d A_l
                    block = _arrays(maps, torch.autograd.grad(sum(block_scores), maps, allow_unused=True))
                else:
                    block = [_arrays([a], torch.autograd.grad(s, a, retain_graph=i < k - 1, allow_unused=True))[0]
                             for i, (a, s) in enumerate(zip(maps, block_scores))]
        return {"outputs": out_np, "scores": scores.detach().numpy().astype(np.float64), "classes": classes,
                "maps": [np.asarray(a.detach().numpy(), np.float32) for a in maps], "grads": grads,
                "block_grads": block}


def specialised(model: onnx.ModelProto, shape: tuple) -> onnx.ModelProto:
    """``model`` with its image input fixed to ``shape`` and its shape computations folded by ONNX
    Runtime's basic graph optimisations (outputs kept by name)."""
    from agnostic_cam.engine.session import onnxruntime

    ort = onnxruntime()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    dims = next(i for i in m.graph.input if i.name not in inits).type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise BackendError(f"input rank {len(dims)} is not that of {shape}")
    for d, n in zip(dims, shape):
        d.Clear()
        d.dim_value = int(n)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = os.path.join(tmp, "folded.onnx")
        ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath)


def _arrays(maps: list, grads) -> list[np.ndarray]:
    """Gradients as float32 arrays (sharing the tensors' memory); zeros where a map was not reached."""
    return [np.zeros(tuple(a.shape), np.float32) if g is None else np.asarray(g.numpy(), np.float32)
            for a, g in zip(maps, grads)]


def _stop(t):
    """The block's output as a new leaf: the blocks after it see its value, no gradient flows back."""
    return t.detach().requires_grad_(True)


def _ancestors(node, stops: set, cut: bool) -> set:
    seen, todo = set(), [node]
    while todo:
        for a in todo.pop().all_input_nodes:
            if a not in seen:
                seen.add(a)
                if not (cut and a in stops):
                    todo.append(a)
    return seen


def add_stops(gm, k: int) -> bool:
    """Cut the token stream after each block's output where the blocks after it read it (its own
    score s_l keeps reading it), so that one backward pass of sum_l s_l gives d s_l / d A_l for every
    block at once: s_l depends on A_l only through block l, and A_l reaches no other s_m.

    ``gm``: the converted graph with outputs [output, A_1..A_k, s_1..s_k] from :func:`with_block_heads`
    (each s_l reads block l's output through a ``ReduceMean`` named ``agnostic_cam_block{l}/mean``).
    The cut is checked on the graph: every s_l reaches its A_l, no s_m (m != l) reaches A_l, and no
    path from A_l to s_l was cut. Returns False (``gm`` untouched) where any of that fails."""
    g = gm.graph
    outs = list(next(n for n in g.nodes if n.op == "output").args[0])
    if len(outs) != 1 + 2 * k:
        return False
    maps, heads = outs[1:1 + k], outs[1 + k:]
    means = {n.target: n for n in g.nodes if n.op == "call_module"}
    found = [means.get(f"agnostic_cam_block{i}/mean") for i in range(k)]
    if any(m is None or not m.args or not hasattr(m.args[0], "users") for m in found):
        return False
    added = []
    for mean in found:
        z = mean.args[0]
        with g.inserting_after(z):
            stop = g.call_function(_stop, (z,))
        added.append(stop)
        for user in list(z.users):
            if user not in (mean, stop) and user.op != "output":
                user.replace_input_with(z, stop)
    stops = set(added)
    full = [_ancestors(s, stops, False) for s in heads]
    cut = [_ancestors(s, stops, True) for s in heads]
    through = {st: _ancestors(st, stops, False) for st in added}
    ok = all(a in cut[i] and not any(a in cut[m] for m in range(k) if m != i)
             and not any(st in full[i] and a in through[st] for st in added) for i, a in enumerate(maps))
    if not ok:
        for st in added:
            st.replace_all_uses_with(st.args[0])
            g.erase_node(st)
    gm.recompile()
    return ok
