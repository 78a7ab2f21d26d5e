"""Reading a bare ONNX graph: which tensors are candidate target layers, in which layout, and which is
picked automatically. Pure ``onnx`` (no framework). Used by
:class:`~agnostic_cam.adapters.onnx.adapter.OnnxAdapter` and the CLI."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from agnostic_cam.core import layout as L
from agnostic_cam.core import layout_detect as LD
from agnostic_cam.adapters.auto_layer import choose, record
from agnostic_cam.adapters.onnx import head as H
from agnostic_cam.adapters.onnx.scan import attention_tensors, fill_shapes, prefix_only
from agnostic_cam.engine import graph as G

_VOLUME = {L.NCHW: L.NCDHW, L.NHWC: L.NDHWC}
# Ops whose rank-4 output is channel-first by the ONNX spec.
_NCHW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization", "InstanceNormalization",
             "LpPool", "GlobalAveragePool", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "QLinearConv",
             "ConvInteger", "LRN"}
# Ops whose output keeps the layout of their (first rank-4) input.
_KEEP_OPS = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip",
             "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Identity", "Dropout", "Softplus", "Mish",
             "Gelu", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt", "Pow", "Cast", "Pad", "Resize", "Upsample",
             "Where", "Celu", "ThresholdedRelu", "Softsign", "Reciprocal", "Floor", "Ceil", "Round",
             # quantized graphs (QDQ and QOperator): (de)quantization and the element-wise QLinear ops
             "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul",
             "QLinearLeakyRelu", "QLinearSigmoid"}


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
    lay: L.LayerLayout | None = None  # full layout (tokens: prefix and grid); None: ``layout`` says it all
    live: bool = True  # False: only its leading (class) token reaches the output (never picked by default)

    def __post_init__(self):
        if self.lay is None:  # a rank-5 tensor in 'NCHW' / 'NHWC' is a volume's NCDHW / NDHWC
            self.lay = L.LayerLayout(_VOLUME.get(self.layout, self.layout) if len(self.shape) == 5 else self.layout)
        self.layout = str(self.lay)

    def to_chw(self, a):
        """This tensor's value (N, ...) as channel-first (N, C, h, w)."""
        return self.lay.to_chw(a)

    def from_chw(self, a):
        return self.lay.from_chw(a)

    @property
    def spatial(self) -> tuple[int | None, ...]:
        dims = self.lay.grid if self.lay.kind == L.TOKENS else L.spatial_size(self.shape, self.layout)
        return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)

    @property
    def channels(self) -> int | None:
        c = self.shape[-1] if self.lay.kind == L.TOKENS else L.channels(self.shape, self.layout)
        return c if isinstance(c, int) and c > 0 else None

    @property
    def has_extent(self) -> bool:  # False when the map is known to be 1x1 (nothing spatial left to explain)
        return not (None not in self.spatial and int(np.prod(self.spatial)) <= 1)


def _perm(node: onnx.NodeProto) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


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
            if src is None or p is None or len(p) not in (4, 5):
                continue
            if p == [0, len(p) - 1, *range(1, len(p) - 1)] and src == "NHWC":
                out = "NCHW"
            elif p == [0, *range(2, len(p)), 1] and src == "NCHW":
                out = "NHWC"
            elif p == list(range(len(p))):
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
    known = lambda d: isinstance(d, int) and d > 0  # noqa: E731

    if len(shape) in (4, 5):
        c1, c3 = shape[1], shape[-1]
        if known(c1) and c1 in (1, 3, 4) and not (known(c3) and c3 in (1, 3, 4)):
            return "NCHW"
        if known(c3) and c3 in (1, 3, 4) and not (known(c1) and c1 in (1, 3, 4)):
            return "NHWC"
    for n in model.graph.node:  # ambiguous: look at how the input is used
        if input_name in n.input:
            if n.op_type == "Transpose" and _perm(n) in ([0, 3, 1, 2], [0, 4, 1, 2, 3]):
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
    """Rank-4 (and token) float tensors computed from the image that ``output`` depends on, in graph
    order, without the per-head tensors of attention blocks.

    Shapes are inferred for one image of per-sample ``sample_shape`` (dims may be None); where static
    inference leaves them open and the image size is known, one ONNX Runtime run measures them.
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
    attn = attention_tensors(fixed, from_input)
    hw = L.spatial_size((1, *sample_shape), input_layout)
    if all(isinstance(d, int) for d in sample_shape):
        fill_shapes(fixed, input_name, (1, *sample_shape), (from_input & needed) - attn - {output})
    layers = []
    producer = {o: n for n in fixed.graph.node for o in n.output if o}
    for i, info in enumerate(G.spatial_tensors(fixed, rank=2 + len(hw))):
        if info.name in from_input and info.name in needed and info.name != output and info.name not in attn:
            lay = layouts.get(info.name) or _shape_layout(info, hw, producer)
            if lay is not None:  # a layout that cannot be told is not offered (layer_layout= settles it)
                layers.append(Layer(info.name, info.op_type, tuple(info.shape), info.node_name, lay, i))
    if all(isinstance(d, int) for d in hw):
        layers += token_layers(fixed, hw, from_input & needed - {output} - attn, start=len(layers))
    dead = prefix_only(fixed, output)
    for ly in layers:  # a token tensor read only through its class token(s)
        ly.live = ly.lay.kind != L.TOKENS or ly.name not in dead
    return sorted(layers, key=lambda ly: _order(fixed).get(ly.name, 0))


def _shape_layout(info, hw: tuple, producer: dict) -> str | None:
    """Layout of a rank-4 tensor the op propagation could not follow: from its shape (one stride over
    the input in exactly one reading) or the op making it (an op over the last axis: channels-last)."""
    if not all(isinstance(d, int) for d in hw):
        return L.NCHW  # images of any size: ONNX's own convention
    if not all(isinstance(d, int) for d in info.shape[1:]):
        return None
    node = producer.get(info.name)
    hint = "channels_last" if node is not None and _last_axis_source(node, producer) is not None else None
    try:
        return LD.detect_layer_layout(info.shape, hw, hint).kind
    except L.LayoutError:
        return None


def _order(model: onnx.ModelProto) -> dict[str, int]:
    return {o: i for i, n in enumerate(model.graph.node) for o in n.output if o}


_LAST_AXIS_OPS = ("LayerNormalization", "MatMul", "Gemm")


def token_layers(model: onnx.ModelProto, input_hw: tuple, allowed: set, start: int = 0,
                 given: dict | None = None) -> list[Layer]:
    """Rank-3 float tensors (N, T, C) that read as tokens: a prefix plus a patch grid (h, w) with one
    stride over the input, produced by an op over the last axis (LayerNormalization, MatMul, Gemm,
    or an element-wise op / Add after one). ``given``: tensor name -> LayerLayout from the user."""
    inferred = G.infer_shapes(model)
    infos = G._value_infos(inferred)
    grids = [tuple(s[2:]) for info in G.spatial_tensors(inferred, 2 + len(input_hw)) if info.op_type == "Conv"
             for s in [info.shape] if all(isinstance(d, int) for d in s[2:])]
    producer = {o: n for n in inferred.graph.node for o in n.output if o}
    out = []
    for n in inferred.graph.node:
        for o in n.output:
            v = infos.get(o)
            if o not in allowed or v is None or v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                continue
            shape = G.tensor_shape(v)
            if shape is None or len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
                continue
            if given and o in given:
                lay = LD.resolve_layer_layout(given[o], shape, input_hw, "channels_last", grids, o)
            else:
                if _last_axis_source(n, producer) is None:
                    continue
                try:
                    lay = LD.detect_layer_layout(shape, input_hw, "channels_last", grids, o)
                except L.LayoutError:
                    continue
                if lay.grid[0] * lay.grid[1] <= 1:
                    continue
            out.append(Layer(o, n.op_type, tuple(shape), n.name, lay.kind, start + len(out), lay))
    return out


def _last_axis_source(node: onnx.NodeProto, producer: dict, depth: int = 4):
    """The op over the last axis that ``node``'s value comes from through element-wise ops (any of their
    inputs, breadth-first: a block's residual ``Add`` reads the MLP's MatMul on its second input), or None."""
    frontier = [node]
    for _ in range(depth):
        found = next((n for n in frontier if n.op_type in _LAST_AXIS_OPS), None)
        if found is not None:
            return found
        frontier = [producer[i] for n in frontier if n.op_type in _KEEP_OPS for i in n.input if i in producer]
        if not frontier:
            return None
    return None


def pick_layer(layers: list[Layer], model: onnx.ModelProto | None = None, output: str | None = None
               ) -> tuple[Layer | None, str]:
    """(automatic target layer, why) by the rule all frameworks share (:func:`auto_layer.choose`); candidates
    are main-path image tensors already; tensors of the output head (:mod:`.head`) are left out, and the maps
    a head reads at several sizes are a detector's levels. Class-token-only token tensors are not reached."""
    scope = H.head_scope(model, output) if model is not None and output is not None else None
    reads = H.head_reads(model, scope) if scope else set()
    levels = reads if len({ly.spatial for ly in layers if ly.name in reads}) > 1 else set()
    name, why = choose([record(ly.name, ly.shape, ly.lay, reached=ly.live, in_head=H.in_head(ly.node, scope),
                               level=ly.name in levels) for ly in layers])
    return next((ly for ly in layers if ly.name == name), None), why


def chw_view(model: onnx.ModelProto, tensor: str, lay: L.LayerLayout, channels: int, name: str) -> onnx.ModelProto:
    """Copy of ``model`` with nodes computing tensor ``tensor`` (tokens (N, T, C)) as (N, C, *grid) into
    a new tensor ``name``: Slice off the prefix tokens, Reshape to (N, h, w, C), Transpose."""
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    p, nd = f"{name}__", len(lay.grid)  # a patch grid (h, w) or a tubelet grid (t, h, w)
    consts = {f"{p}starts": [lay.prefix], f"{p}ends": [2**62], f"{p}axes": [1], f"{p}shape": [-1, *lay.grid, channels]}
    for k, v in consts.items():
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(v, np.int64), k))
    out.graph.node.extend([
        helper.make_node("Slice", [tensor, f"{p}starts", f"{p}ends", f"{p}axes"], [f"{p}patches"], name=f"{p}slice"),
        helper.make_node("Reshape", [f"{p}patches", f"{p}shape"], [f"{p}grid"], name=f"{p}reshape"),
        helper.make_node("Transpose", [f"{p}grid"], [name], perm=[0, nd + 1, *range(1, nd + 1)], name=f"{p}transpose"),
    ])
    return out
