"""tf2onnx conversion for the Keras adapter: a traced function to an ONNX graph whose two outputs are
the very tensors the model computes (not copies), so the graph can be cut after the tapped layer.

Keras' own ``model.export(path, format="onnx")`` exports the model's outputs only; adding the tapped
layer would need a new functional model (and nested models cannot expose inner tensors that way).
We trace the adapter's own evaluator of the model instead, which returns [output, layer] for any
layer, nested or not, and convert that function with tf2onnx, which Keras' exporter also uses.
"""
from __future__ import annotations

import tensorflow as tf


def convert(concrete):
    """tf2onnx conversion of a concrete function WITHOUT tf2onnx's graph optimizers.

    ONNX Runtime optimizes the graph itself when it opens a session (constant folding, Conv+BN
    fusion, transpose elimination), and tf2onnx's optimizers cost seconds on a ResNet (they
    deep-copy the graph for every pass). One of them would also break the taps: the transpose
    optimizer moves the NHWC<->NCHW transposes around convolutions through element-wise ops, so the
    tapped NHWC tensor ends up on a side branch (a Transpose feeding only the graph output) while
    the rest of the model reads an NCHW copy, and the tail graph after the tapped tensor
    (Ablation-CAM, CAM) would not depend on it at all.
    """
    from agnostic_cam import compat

    convert_common, names_from_structed = compat.tf2onnx_convert_common()

    ins = [t.name for t in concrete.inputs[:1]]  # the image; later inputs are captured variables/constants
    outs = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
    rename = names_from_structed(concrete, ins, outs)
    with tf.device("/cpu:0"):
        frozen = freeze(concrete, ins, outs)
        proto, _ = convert_common(frozen, name="agnostic_cam", continue_on_error=True, opset=13,
                                       input_names=ins, output_names=outs, tensors_to_rename=rename,
                                       optimizers={})
    return proto


def freeze(concrete, ins: list, outs: list):
    """The frozen, grappler-optimized GraphDef that ``tf2onnx.tf_loader.from_function`` returns, without
    the step of it that costs most and that the conversion does not use.

    ``from_function`` freezes with ``convert_variables_to_constants_v2``, which builds a new
    ConcreteFunction from the frozen GraphDef (an import, prune and lift of every op: 40% of a
    ResNet50 export) only to read its GraphDef back. Here the frozen GraphDef is read straight from
    TensorFlow's converter (same freezing: no control-flow lowering, aggressive inlining) and given its
    shapes by importing it into a plain graph; the rest is ``from_function``'s own code. The ONNX
    graphs are the same (same nodes, weights and outputs; tf2onnx's generated names aside). Where
    TensorFlow's private converter is not there (another version), ``from_function`` itself runs.
    """
    from tf2onnx import tf_loader

    try:
        from tensorflow.python.framework import convert_to_constants as cc

        data = cc._FunctionConverterDataInEager(func=concrete, lower_control_flow=False, aggressive_inlining=True)
        graph_def, _ = cc._replace_variables_by_constants(converter_data=data)
    except (ImportError, AttributeError, TypeError, ValueError):  # ValueError: from_function's repair path
        return tf_loader.from_function(concrete, ins, outs)
    with tf.Graph().as_default() as shaped:
        tf.import_graph_def(graph_def, name="")
    graph_def = tf_loader.fix_freezing_errors_part2(shaped.as_graph_def(add_shapes=True))
    with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
        tf.import_graph_def(graph_def, name="")
        return tf_loader.tf_optimize(tf_loader.inputs_without_resource(sess, ins), outs, graph_def)


def rename_through_identities(graph, name: str, new: str) -> None:
    """Give the tensor behind graph output ``name`` the name ``new``, in place.

    tf2onnx returns each output through a chain of Identity copies of the tensor the model really
    computes. The chain is removed and the real tensor renamed, so the rest of the model reads the
    tensor called ``new``: the tail graph after ACTIVATION (Ablation-CAM, CAM) must depend on it.
    """
    prod = {o: n for n in graph.node for o in n.output}
    chain, t = {name}, name
    while t in prod and prod[t].op_type == "Identity":
        graph.node.remove(prod[t])
        t = prod[t].input[0]
        chain.add(t)
    for n in graph.node:
        n.input[:] = [new if i in chain else i for i in n.input]
        n.output[:] = [new if o in chain else o for o in n.output]
    for vi in (*graph.output, *graph.value_info):
        if vi.name in chain:
            vi.name = new


def replace_erfc(proto):
    """``Erfc(x)`` (exact GELU in TensorFlow: ``0.5 x erfc(-x / sqrt 2)``), which tf2onnx leaves
    unconverted, written as ``1 - Erf(x)`` in place; returns ``proto``."""
    from onnx import helper, numpy_helper
    import numpy as np

    nodes = list(proto.graph.node)
    if not any(n.op_type == "Erfc" for n in nodes):
        return proto
    one = "agnostic_cam_erfc_one"
    proto.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
    del proto.graph.node[:]
    for n in nodes:
        if n.op_type != "Erfc":
            proto.graph.node.append(n)
            continue
        erf = f"{n.output[0]}__erf"
        proto.graph.node.extend([helper.make_node("Erf", [n.input[0]], [erf], name=f"{n.name}__erf"),
                                 helper.make_node("Sub", [one, erf], [n.output[0]], name=f"{n.name}__sub")])
    return proto
