"""The output head of an ONNX graph, for the automatic target layer (:func:`~.layers.pick_layer`).

The PyTorch rule knows modules: the head is the module that returns the explained output (a classifier
with its own 1x1 convolution, a segmenter's decode head) or reads several feature levels (a
detector's head), and nothing inside it is picked. A bare graph has no modules, but exporters keep
the module path in node names (``/head/in_conv/Conv``, ``/model.22/cv3.2/Conv``). The head is the
scope, one level under the scope every node shares, of the node that produces the output; the
tensors that nodes of the head read from outside it are what the head reads (a detector's
feature levels). A graph whose node names hold no such scope has no head here (the output tensor
itself is never a candidate anyway).
"""
from __future__ import annotations

import onnx

from agnostic_cam.engine.blocks import live_nodes


def _scope(name: str) -> list[str]:
    """The scope path of a node name: ``/model/head/Gemm`` (``model/head/Gemm``) -> ['model', 'head']."""
    parts = name.split("/")
    return [p for p in parts[:-1] if p] if len(parts) > 1 else []


def head_scope(model: onnx.ModelProto, output: str) -> tuple[str, ...] | None:
    """The scope path (('model', 'head')) of the head producing tensor ``output``, or None. The shared
    scope is taken over the nodes that have one (exporters leave some, e.g. ``Identity_3``, without)."""
    # only what the output is computed from: branches that just read the model (an embedded explanation's
    # xai/... nodes, extra outputs) do not move the shared scope
    nodes = [n for n in live_nodes(model.graph, output) if _scope(n.name) and n.op_type != "Constant"]
    producer = next((n for n in nodes if output in n.output), None)
    if producer is None:
        return None
    root = _scope(nodes[0].name)
    for n in nodes:
        s = _scope(n.name)
        k = next((i for i, (a, b) in enumerate(zip(root, s)) if a != b), min(len(root), len(s)))
        root = root[:k]
    own = _scope(producer.name)
    return tuple(own[:len(root) + 1]) if len(own) > len(root) else None


def in_head(node_name: str, scope: tuple[str, ...] | None) -> bool:
    return scope is not None and tuple(_scope(node_name)[:len(scope)]) == scope


def head_reads(model: onnx.ModelProto, scope: tuple[str, ...] | None) -> set[str]:
    """Tensors made outside the head ``scope`` that nodes inside it read (empty without a head)."""
    if scope is None:
        return set()
    made_inside = {o for n in model.graph.node if in_head(n.name, scope) for o in n.output}
    consts = {i.name for i in model.graph.initializer}
    return {i for n in model.graph.node if in_head(n.name, scope) for i in n.input
            if i and i not in made_inside and i not in consts}
