"""Reading a bare ONNX graph: which tensors are candidate target layers and in which layout.

Pure ``onnx`` (no framework). Used by :class:`~agnostic_cam.adapters.onnx.OnnxAdapter` and the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from agnostic_cam import layout as L
from agnostic_cam.engine import graph as G

# Ops whose rank-4 output is channel-first by the ONNX spec.
_NCHW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization", "InstanceNormalization",
             "LpPool", "GlobalAveragePool", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "QLinearConv",
             "ConvInteger", "LRN"}
# Ops whose output keeps the layout of their (first rank-4) input.
_KEEP_OPS = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip",
             "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Identity", "Dropout", "Softplus", "Mish",
             "Gelu", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt", "Pow", "Cast", "Pad", "Resize", "Upsample",
             "Where", "Celu", "ThresholdedRelu", "Softsign", "Reciprocal", "Floor", "Ceil", "Round"}


@dataclass
class Layer:
    """A candidate target layer: a float tensor of rank 4 computed from the image.

    name: the tensor's name in the graph (what ``target_layer`` takes); op_type: the op that
    produces it; shape: its shape for one image (batch 1); node: the producing node's name, usually
    close to the exporting framework's layer name; layout: 'NCHW' or 'NHWC'; spatial: (h, w).
    """

    name: str
    op_type: str
    shape: tuple
    node: str
    layout: str
    index: int

    @property
    def spatial(self) -> tuple[int | None, int | None]:
        return tuple(d if isinstance(d, int) and d > 0 else None for d in L.spatial_size(self.shape, self.layout))

    @property
    def channels(self) -> int | None:
        c = L.channels(self.shape, self.layout)
        return c if isinstance(c, int) and c > 0 else None

    @property
    def has_extent(self) -> bool:
        """False when the map is known to be 1x1 (nothing spatial left to explain)."""
        h, w = self.spatial
        return not (h is not None and w is not None and h * w <= 1)


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


def tensor_layouts(model: onnx.ModelProto, input_name: str, input_layout: str) -> dict[str, str]:
    """Layout ('NCHW' / 'NHWC') of every rank-4 tensor reachable from the input, where it can be told.

    Propagated in graph order: layout-defined ops (Conv, pooling, BN) give NCHW, transposes swap
    between the two, element-wise ops keep their input's layout. Tensors not listed are unknown.
    """
    lay: dict[str, str] = {input_name: input_layout}
    for n in model.graph.node:
        ins = [i for i in n.input if i in lay]
        if not ins:
            continue
        if n.op_type in _NCHW_OPS:
            out = "NCHW"
        elif n.op_type == "Transpose":
            p = _perm(n)
            src = lay[n.input[0]] if n.input[0] in lay else None
            if src is None or p is None or len(p) != 4:
                continue
            if p == [0, 3, 1, 2] and src == "NHWC":
                out = "NCHW"
            elif p == [0, 2, 3, 1] and src == "NCHW":
                out = "NHWC"
            elif p == [0, 1, 2, 3]:
                out = src
            else:
                continue
        elif n.op_type in _KEEP_OPS:
            out = lay[ins[0]]
        else:
            continue
        for o in n.output:
            if o:
                lay[o] = out
    return lay


def detect_layout(shape: tuple, model: onnx.ModelProto, input_name: str) -> str:
    """Input layout from its declared shape, else from the first op that consumes it."""
    def known(d):
        return isinstance(d, int) and d > 0

    if len(shape) == 4:
        c1, c3 = shape[1], shape[3]
        if known(c1) and c1 in (1, 3, 4) and not (known(c3) and c3 in (1, 3, 4)):
            return "NCHW"
        if known(c3) and c3 in (1, 3, 4) and not (known(c1) and c1 in (1, 3, 4)):
            return "NHWC"
    for n in model.graph.node:  # ambiguous: look at how the input is used
        if input_name in n.input:
            if n.op_type == "Transpose" and _perm(n) == [0, 3, 1, 2]:
                return "NHWC"
            if n.op_type in _NCHW_OPS:
                return "NCHW"
    return "NCHW"


def depends_on(model: onnx.ModelProto, source: str) -> set[str]:
    """Tensors computed (directly or not) from tensor ``source``."""
    dep = {source}
    for n in model.graph.node:
        if any(i in dep for i in n.input if i):
            dep.update(o for o in n.output if o)
    return dep


def ancestors(model: onnx.ModelProto, target: str) -> set[str]:
    """Tensors that ``target`` is computed from."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    seen: set[str] = set()
    stack = [target]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is not None:
            stack.extend(i for i in node.input if i)
    return seen


def candidate_layers(model: onnx.ModelProto, input_name: str, input_layout: str, sample_shape: tuple,
                     output: str) -> list[Layer]:
    """Rank-4 float tensors computed from the image that ``output`` depends on, in graph order.

    Shapes are inferred for one image of per-sample ``sample_shape`` (dims may be None).
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:
        if vi.name == input_name:
            dims = vi.type.tensor_type.shape.dim
            for d, v in zip(dims, (1, *sample_shape)):
                if isinstance(v, int) and v > 0:
                    d.Clear()
                    d.dim_value = v
    layouts = tensor_layouts(fixed, input_name, input_layout)
    from_input = depends_on(fixed, input_name)
    needed = ancestors(fixed, output)
    layers = []
    for i, info in enumerate(G.spatial_tensors(fixed)):
        if info.name in from_input and info.name in needed and info.name != output:
            lay = layouts.get(info.name, "NCHW")
            layers.append(Layer(info.name, info.op_type, tuple(info.shape), info.node_name, lay, i))
    return layers


def default_layer(layers: list[Layer]) -> Layer | None:
    """The last candidate with a spatial extent: the last feature map before global pooling."""
    good = [ly for ly in layers if ly.has_extent]
    return good[-1] if good else None
