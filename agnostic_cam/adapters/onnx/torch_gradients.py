"""Gradient backend for bare ONNX models: the graph converted to PyTorch with onnx2torch.

Optional (extra ``onnx-grad``). The graph is first given exactly two outputs, the explained output
(N, K) and the target layer's tensor (or, for :meth:`TorchGradients.vjp`, any tensor: a few such
conversions are cached), then converted, so the layer's tensor is a node of the
converted module's autograd graph: d(score)/d(activation) is one ``torch.autograd.grad`` call.
Gradients are computed in float32 on CPU (or on the device of ``device=``).
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import onnx

from agnostic_cam.adapters.base import Gradients
from agnostic_cam.adapters.onnx.legal import describe_failure, legalize
from agnostic_cam.engine import graph as G
from agnostic_cam.targets import TargetSpec
from agnostic_cam.errors import BackendError, InputError, MissingDependencyError, ModelError, OptionError

_EXTRA = "pip install 'agnostic-cam[onnx-grad]'"

try:
    import torch
    from onnx2torch import convert

    from agnostic_cam.adapters.pytorch.rules import RULES
    from agnostic_cam.adapters.pytorch.rules import relu_rule as torch_relu_rule
    from agnostic_cam.adapters.pytorch.primitives import target_scores
except ImportError as e:  # pragma: no cover - exercised with the modules blocked
    raise MissingDependencyError(f"gradient methods on a bare ONNX model need torch and onnx2torch ({e}): {_EXTRA}") from e


def _constants_to_initializers(m: onnx.ModelProto) -> None:
    """Turn tensor-valued top-level ``Constant`` nodes, and ``Identity`` nodes that copy a weight
    (the PyTorch exporter shares equal weights that way), into initializers (in place): onnx2torch
    expects weights as initializers."""
    keep = []
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        src = None
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            src = n.attribute[0].t
        elif n.op_type == "Identity" and n.input[0] in inits:
            src = inits[n.input[0]]
        if src is not None:
            t = onnx.TensorProto()
            t.CopyFrom(src)
            t.name = n.output[0]
            m.graph.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)


def _two_output_graph(model: onnx.ModelProto, output: str, activation: str) -> onnx.ModelProto:
    """Copy of ``model`` whose graph outputs are exactly ``[output, activation]``, weights as initializers."""
    m = G.with_outputs(model, [output, activation])
    _constants_to_initializers(m)
    keep = {o.name: o for o in m.graph.output}
    G.replace_repeated(m.graph.output, [keep[output], keep[activation]])
    return m


@contextlib.contextmanager
def relu_rule(rule: str):
    """Change how gradients pass through every ReLU of the converted graph for the block only.

    guided: positive gradients where the forward input was positive (Springenberg et al. 2015);
    deconv: positive gradients regardless of the forward input (Zeiler & Fergus 2014).
    The same mechanism as for PyTorch models (:mod:`agnostic_cam.adapters.pytorch.rules`): every
    ReLU call is rerouted while the block runs; the converted module is not modified.
    """
    with torch_relu_rule(rule) as mode:
        yield mode
    if mode is not None and mode.calls == 0:
        raise ModelError(f"rule {rule!r} changes how gradients pass through ReLUs, but the converted graph has none")


class TorchGradients:
    """Activations and gradients of an ONNX graph through its PyTorch conversion.

    model: the ONNX model; input_name: the image input; output/activation: tensor names of the
    explained output (N, K) and of the target layer (rank 4, in the graph's own layout).
    """

    max_cached = 4  # converted modules kept for other tensors than the target layer (converting is slow)

    def __init__(self, model: onnx.ModelProto, input_name: str, output: str, activation: str):
        self.input_name = input_name
        self._model, self._output, self._activation = model, output, activation
        graph = _two_output_graph(model, output, activation)
        self.module = self._convert(graph)
        self._modules: dict[str, object] = {activation: self.module}
        shape = G.tensor_shape(next(i for i in graph.graph.input if i.name == input_name)) or ()
        self.fixed_batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None

    @staticmethod
    def _convert(graph: onnx.ModelProto):
        """onnx2torch conversion of ``graph`` after :func:`~agnostic_cam.adapters.onnx.legal.legalize`
        (opset 18+ graphs); BackendError naming the operator and opset when it cannot be done."""
        legal = legalize(graph)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = convert(legal).eval()
        except Exception as e:  # noqa: BLE001 - onnx2torch raises NotImplementedError, KeyError, ...
            raise BackendError(f"the gradient backend cannot convert this graph: {describe_failure(e, graph)}; "
                               "gradient methods are unavailable for it, use a forward method: scorecam, "
                               "ablationcam, eigencam") from None
        for p in module.parameters():
            p.requires_grad_(False)
        return module

    def module_for(self, tensor: str):
        """The converted graph with outputs ``[output, tensor]``; a few are cached, oldest dropped first."""
        mod = self._modules.pop(tensor, None)
        if mod is None:
            mod = self._convert(_two_output_graph(self._model, self._output, tensor))
        self._modules[tensor] = mod  # most recently used last
        extra = [t for t in self._modules if t != self._activation]
        while len(extra) > self.max_cached:
            del self._modules[extra.pop(0)]
        return mod

    def _chunks(self, x: np.ndarray):
        """(lo, hi, padded chunk) in the graph's fixed batch size, or the whole batch."""
        n = x.shape[0]
        bs = self.fixed_batch or n
        for lo in range(0, n, bs):
            c = x[lo:lo + bs]
            m = c.shape[0]
            if self.fixed_batch and m < bs:
                c = np.concatenate([c, np.repeat(c[-1:], bs - m, axis=0)])
            yield m, c

    def _run(self, xt, module=None):
        out = (module or self.module)(xt)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise BackendError("the converted graph did not return (output, activation)")
        return out[0], out[1]

    _scores = staticmethod(target_scores)

    def _backward(self, x: np.ndarray, target: TargetSpec, wrt_input: bool, rule: str = "vanilla") -> Gradients:
        if torch.is_inference_mode_enabled():
            raise BackendError("cannot compute ONNX gradients inside torch.inference_mode(); call explain() outside it")
        outs, acts, grads, scores, classes_all = [], [], [], [], []
        with torch.enable_grad(), relu_rule(rule):
            for m, chunk in self._chunks(x):
                xt = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).requires_grad_(True)
                out, act = self._run(xt)
                lo = sum(o.shape[0] for o in outs)
                out_np = out.detach().numpy().astype(np.float32)[:m]
                if target.fixed is not None or target.fn is not None:
                    sub = TargetSpec(target.fn or target.fixed[lo:lo + m], m)
                else:
                    sub = TargetSpec(None, m)
                classes = sub.indices(out_np)
                pad_classes = None if classes is None else np.concatenate(
                    [classes, np.repeat(classes[-1:], out.shape[0] - m)])
                s = self._scores(out, pad_classes, sub)
                (g,) = torch.autograd.grad(s[:m].sum(), xt if wrt_input else act)
                outs.append(out_np)
                scores.append(s.detach().numpy()[:m].astype(np.float64))
                acts.append(act.detach().numpy()[:m].astype(np.float32))
                grads.append(g.detach().numpy()[:m].astype(np.float32))
                if classes is not None:
                    classes_all.append(classes)
        classes_full = np.concatenate(classes_all) if classes_all else None
        res = Gradients(np.concatenate(outs), np.concatenate(scores), classes_full)
        if wrt_input:
            res.input_grads = np.concatenate(grads)
        else:
            res.activations, res.grads = np.concatenate(acts), np.concatenate(grads)
        return res

    def layer_gradients(self, x: np.ndarray, target: TargetSpec) -> Gradients:
        """Activations and d(score)/d(activation), in the layer tensor's own layout."""
        return self._backward(x, target, wrt_input=False)

    def input_gradients(self, x: np.ndarray, target: TargetSpec, rule: str = "vanilla") -> Gradients:
        """d(score)/d(input) in the input's layout, under ``rule`` ('vanilla', 'guided', 'deconv')."""
        if rule not in RULES:
            raise OptionError(f"unknown backward rule {rule!r}; use one of {RULES}")
        return self._backward(x, target, wrt_input=True, rule=rule)

    def vjp(self, x: np.ndarray, tensor: str | None, cotangent, rule: str = "vanilla") -> tuple[np.ndarray, np.ndarray]:
        """Forward ``x`` (input layout), then d<A, cotangent(A)>/dx with every ReLU under ``rule``.

        A: the explained output (N, K) when ``tensor`` is None, else that tensor in its own layout;
        ``cotangent`` sees the whole batch's A (N, ...) and returns an array of its shape.
        Returns (A float32, dx float32 in the input's layout).
        """
        if rule not in RULES:
            raise OptionError(f"unknown backward rule {rule!r}; use one of {RULES}")
        if torch.is_inference_mode_enabled():
            raise BackendError("cannot compute ONNX gradients inside torch.inference_mode(); call it outside")
        module = self.module if tensor is None else self.module_for(tensor)
        pick = 0 if tensor is None else 1
        xs, vals, ms = [], [], []
        with torch.enable_grad(), relu_rule(rule):
            for m, chunk in self._chunks(x):
                xt = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).requires_grad_(True)
                xs.append(xt)
                vals.append(self._run(xt, module)[pick])
                ms.append(m)
            a_np = np.concatenate([v.detach().numpy()[:m] for v, m in zip(vals, ms)]).astype(np.float32)
            cot = np.asarray(cotangent(a_np), dtype=np.float32)
            if cot.shape != a_np.shape:
                raise InputError(f"the cotangent must have the value's shape {a_np.shape}; got {cot.shape}")
            grads, lo = [], 0
            for xt, v, m in zip(xs, vals, ms):
                c = np.zeros(tuple(v.shape), np.float32)
                c[:m] = cot[lo:lo + m]
                lo += m
                if not v.requires_grad:
                    grads.append(np.zeros((m, *xt.shape[1:]), np.float32))
                    continue
                (g,) = torch.autograd.grad(v, xt, torch.from_numpy(c), allow_unused=True)
                grads.append(np.zeros((m, *xt.shape[1:]), np.float32) if g is None else g.numpy()[:m].astype(np.float32))
        return a_np, np.concatenate(grads)
