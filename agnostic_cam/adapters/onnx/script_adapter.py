"""TorchScript modules (``torch.jit.trace`` / ``torch.jit.script``) in ``Explainer.from_torch``.

A ScriptModule runs compiled code: forward hooks never fire on a traced module and cannot even be
registered on a scripted one, so the PyTorch adapter's hooks cannot read a layer. Instead the
module is exported to ONNX once (the legacy exporter, which takes ScriptModules and names every
node after the module path that produced it: ``/layer4/1/conv2/Conv`` for ``layer4.1.conv2``), the
layer is found by that module name, and the explainer is an ONNX one: forward methods on ONNX
Runtime, gradient methods through the ONNX gradient backend (onnx2torch), which needs the extra
``onnx-grad``. The export is done at construction for ``input_shape`` (required) and a dynamic batch.
The user's module is left as it was (training flags restored); when its weights change later, the
explainer refuses to run instead of explaining the old weights.
"""
from __future__ import annotations

import io
import warnings

import onnx

from agnostic_cam import compat
from agnostic_cam.adapters.base import closest_names
from agnostic_cam.adapters.onnx.adapter import OnnxAdapter
from agnostic_cam.errors import InputError, MissingDependencyError, ModelError

try:
    import torch

    from agnostic_cam.adapters.pytorch.primitives import preserved
except ImportError as e:  # pragma: no cover - from_torch checks torch first
    raise MissingDependencyError(f"TorchScript modules need PyTorch ({e}): pip install 'agnostic-cam[torch]'") from e


def _layer_name(model, target_layer) -> str:
    named = dict(model.named_modules())
    if isinstance(target_layer, torch.nn.Module):
        for name, m in named.items():
            if m is target_layer and name:
                return name
        raise InputError("target_layer is a module that is not part of this TorchScript module; pass its dotted "
                         "name, e.g. 'layer4'")
    if not isinstance(target_layer, str):
        raise InputError(f"target_layer must be a dotted module name or the module itself; got "
                         f"{type(target_layer).__name__}")
    if target_layer not in named or not target_layer:
        raise InputError(f"the TorchScript module has no submodule named {target_layer!r}; closest names: "
                         f"{closest_names(target_layer, [n for n in named if n])}")
    return target_layer


def _fresh_copy(model):
    """An independent copy of the ScriptModule, on CPU (``torch.jit.save`` / ``load``).

    The legacy exporter inlines the exported module's graph in place: the user's module would be
    changed, and a second export of it would no longer carry the module scopes the layer is found by.
    """
    buf = io.BytesIO()
    torch.jit.save(model, buf)
    buf.seek(0)
    return torch.jit.load(buf, map_location="cpu")


def export(model, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """ONNX export of (a copy of) a ScriptModule for one image shape (C, H, W), dynamic batch, opset 17."""
    buf = io.BytesIO()
    try:
        model = _fresh_copy(model)
    except Exception as e:  # noqa: BLE001 - save/load raise RuntimeError and others
        raise ModelError(f"the TorchScript module cannot be copied for export with torch.jit.save/load "
                         f"({type(e).__name__}: {str(e)[:200]})") from None
    p = next(model.parameters(), None)
    x = torch.zeros((1, *input_shape), dtype=p.dtype if p is not None else torch.float32,
                    device=p.device if p is not None else "cpu")
    with preserved(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compat.torch_onnx_export_legacy(model, (x,), buf, opset_version=17, input_names=["input"],
                                            output_names=["output"], do_constant_folding=True,
                                            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        except compat.IncompatibleDependencyError:
            raise
        except Exception as e:  # noqa: BLE001 - the exporter raises many types
            raise ModelError(f"the TorchScript module could not be exported to ONNX for input shape {(1, *input_shape)}"
                             f" ({type(e).__name__}: {str(e)[:300]}); check input_shape (C, H, W)") from None
    return onnx.load_from_string(buf.getvalue())


def module_output(model: onnx.ModelProto, name: str) -> str:
    """The tensor a submodule ``name`` returns in the export: the output of a node in its scope
    ``/a/b/`` (for ``a.b``) that a node outside the scope (or the graph output) reads."""
    scope = "/" + name.replace(".", "/") + "/"
    inside = [n for n in model.graph.node if n.name.startswith(scope)]
    if not inside:
        raise ModelError(f"layer {name!r} computes nothing in the ONNX export of the TorchScript module (is it "
                         "called in forward?); pick another layer")
    read_outside = {i for n in model.graph.node if not n.name.startswith(scope) for i in n.input}
    read_outside |= {o.name for o in model.graph.output}
    outs = [o for n in inside for o in n.output if o in read_outside]
    if len(outs) != 1:
        raise ModelError(f"layer {name!r} returns {len(outs)} tensors in the export ({outs[:4]}); pick a layer that "
                         "returns one feature map")
    return outs[0]


class ScriptAdapter(OnnxAdapter):
    """Explains a ``torch.jit.ScriptModule`` through its ONNX export (see the module docstring)."""

    framework = "torch"

    def __init__(self, model, target_layer, input_shape: tuple[int, ...] | None = None, output: str = "raw",
                 providers=None, batch_size: int | None = None):
        if input_shape is None or len(tuple(input_shape)) != 3:
            raise InputError("a TorchScript module is explained through its ONNX export, which needs one image's "
                             f"shape: pass input_shape=(C, H, W) (got {input_shape})")
        if output not in ("raw", "logits", "pre_softmax"):
            raise InputError(f"output must be 'raw' (the model's own output) or 'pre_softmax' (the input of a final "
                             f"Softmax; 'logits' also spells it here); got {output!r}")
        name = None if target_layer is None else _layer_name(model, target_layer)
        self.script = model
        self._version = self.weights_version()
        proto = export(model, tuple(input_shape))
        tensor = None if name is None else module_output(proto, name)  # None: the ONNX adapter picks one
        super().__init__(proto, tensor, "NCHW", None if output == "raw" else "logits", "input", providers, batch_size)
        if name is not None:
            self.layer_name = name

    def weights_version(self) -> object:
        return tuple((t.data_ptr(), t._version) for t in (*self.script.parameters(), *self.script.buffers()))

    def _fresh(self) -> None:
        if self.weights_version() != self._version:
            raise ModelError("the TorchScript module's weights changed after the Explainer was built (it was exported "
                             "to ONNX then); build a new Explainer to explain the new weights")

    def engine(self, sample_shape: tuple[int, ...]):
        self._fresh()
        return super().engine(sample_shape)

    def _backend(self):
        self._fresh()
        return super()._backend()
