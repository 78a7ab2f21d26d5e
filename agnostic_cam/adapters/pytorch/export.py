"""The PyTorch model's ONNX export, with the target layer's tensor as extra graph outputs
(a mixin of :class:`~agnostic_cam.adapters.pytorch.adapter.TorchAdapter`)."""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from agnostic_cam import compat
from agnostic_cam.adapters.pytorch.layers import no_mha_fastpath
from agnostic_cam.adapters.pytorch.primitives import hooked, preserved
from agnostic_cam.core.concurrency import EXPORT_LOCK
from agnostic_cam.engine.eager import engine_for, run_export
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
        with EXPORT_LOCK, preserved(self.model), torch.no_grad(), no_mha_fastpath(), warnings.catch_warnings():
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
