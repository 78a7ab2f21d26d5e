"""The PyTorch model's ONNX export, with the target layer's tensor as extra graph outputs
(a mixin of :class:`~agnostic_cam.adapters.pytorch.adapter.TorchAdapter`).

Antialiased resizing (``F.interpolate(..., antialias=True)``: ``aten::_upsample_{bicubic,bilinear}2d_aa``,
e.g. Hugging Face DINOv2-with-registers resizing its position embedding) has no opset-17 translation.
It is linear and separable, and the exported sizes are static (only the batch is dynamic), so
:func:`aa_resize_symbolics` writes it as ``Wh @ x @ Ww^T`` with the two matrices computed by
PyTorch's own kernel on identity rows: the graph's values are PyTorch's (checked on random data
when translating; a mismatch fails the export, which then falls back to eager forward passes).
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch
from torch import nn

from agnostic_cam import compat
from agnostic_cam.adapters.pytorch.layers import no_mha_fastpath
from agnostic_cam.adapters.pytorch.primitives import hooked, preserved
from agnostic_cam.core.concurrency import EXPORT_LOCK
from agnostic_cam.engine.eager import ExportFailed, engine_for, run_export
from agnostic_cam.engine.graph import ACTIVATION, NATIVE, OUTPUT, to_float32


class TorchExport:
    """``export_onnx`` (legacy TorchScript exporter, opset 17, dynamic batch) and the engine built on it."""

    def export_onnx(self, sample_shape: tuple[int, ...]):
        import onnx

        self._ensure_layout(sample_shape)
        adapter = self

        class Export(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = adapter.model

            def forward(self, x):
                if adapter.layer is None:
                    return adapter._forward(x)
                store = []
                with hooked(adapter.layer, lambda m, i, o: store.append(o)):
                    out = adapter._forward(x)
                native = store[-1]
                if adapter.native_name == ACTIVATION:
                    return out, native
                return out, adapter.to_chw(native), native

        names = [OUTPUT] if self.layer is None else [OUTPUT, ACTIVATION] + ([NATIVE] if self.native_name != ACTIVATION else [])
        buf = io.BytesIO()
        with EXPORT_LOCK, preserved(self.model), torch.no_grad(), no_mha_fastpath(), aa_resize_symbolics(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = self._tensor(np.zeros((1, *sample_shape), np.float32))
            run_export(lambda: compat.torch_onnx_export_legacy(
                Export(), (x,), buf, opset_version=17, input_names=["input"],
                output_names=names, do_constant_folding=True,
                dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}}))
        return to_float32(onnx.load_from_string(buf.getvalue()))  # float64/half models run in float32 on ORT

    def _make_engine(self, sample_shape: tuple[int, ...]):
        """ONNX Runtime on the export, or PyTorch forward passes when the export fails (one warning)."""
        return engine_for(self, sample_shape)


AA_OPS = ("aten::_upsample_bicubic2d_aa", "aten::_upsample_bilinear2d_aa")
_OPSET = 17


def _axis_matrix(op, n_in: int, n_out: int, align: bool, scale) -> torch.Tensor:
    """(n_out, n_in): the 1-D resize as a matrix, PyTorch's kernel applied to identity rows (along
    the last axis: the kernel's height pass on a width-1 image is not the 1-D resize)."""
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, 1, n_in)
    return op(eye, [1, n_out], align, None, scale).reshape(n_in, n_out).T


def _aa_symbolic(name: str):
    op = getattr(torch.ops.aten, name.split("::")[1]).default  # (x, output_size, align_corners, scales_h, scales_w)

    def symbolic(g, x, *args):
        from torch.onnx import symbolic_helper as sh

        node = g.original_node  # the traced aten node: static input and output sizes
        src = next(iter(node.inputs())).type()
        (_, _, h0, w0), (_, _, h1, w1) = src.varyingSizes(), node.output().type().varyingSizes()  # batch: None
        align = bool(sh._maybe_get_const(args[1], "b"))
        if len(args) == 3:  # .vec: (output_size, align_corners, scale_factors)
            scales = (None, None) if sh._is_none(args[2]) else tuple(sh._get_const(args[2], "fs", "scale_factors"))
        else:  # (output_size, align_corners, scales_h, scales_w)
            scales = tuple(None if sh._is_none(a) else sh._get_const(a, "f", "scale") for a in args[2:4])
        wh, ww = _axis_matrix(op, h0, h1, align, scales[0]), _axis_matrix(op, w0, w1, align, scales[1])
        probe = torch.randn(2, 3, h0, w0, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        want = op(probe, [h1, w1], align, *scales)
        if not torch.allclose(wh @ probe @ ww.T, want, rtol=1e-9, atol=1e-9):
            raise ExportFailed(ValueError(f"{name} is not the separable resize it was taken for"))  # falls back
        dtype = src.dtype() if src.dtype() is not None else torch.float32
        rows = g.op("Constant", value_t=wh.to(dtype))
        cols = g.op("Constant", value_t=ww.T.contiguous().to(dtype))
        return g.op("MatMul", g.op("MatMul", rows, x), cols)

    return symbolic


@contextlib.contextmanager
def aa_resize_symbolics():
    """Register :func:`_aa_symbolic` for the legacy exporter's opset 17 for the block (callers hold
    EXPORT_LOCK); a translation the user registered is left in place, and nothing is registered
    where this torch's exporter registry cannot be read (the export then falls back as before)."""
    import sys

    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    # the legacy exporter's registry, found through the module of its public function (its private
    # path moved in torch 2.9: torch.onnx._internal[.torchscript_exporter].registration)
    registry = getattr(getattr(sys.modules.get(register_custom_op_symbolic.__module__), "registration", None),
                       "registry", None)
    known, table = getattr(registry, "is_registered_op", None), getattr(registry, "_registry", None)
    ours = [] if known is None or not isinstance(table, dict) else [n for n in AA_OPS if not known(n, _OPSET)]
    fresh = [n for n in ours if n not in table]  # ops without any translation: their entry goes again after
    for n in ours:
        register_custom_op_symbolic(n, _aa_symbolic(n), _OPSET)
    try:
        yield
    finally:
        for n in ours:
            unregister_custom_op_symbolic(n, _OPSET)
        for n in fresh:  # (an emptied entry would make the user's own export fail with a confusing error)
            table.pop(n, None)
