"""Maps a model returns itself (issue 26): a file written by ``agnostic-cam embed`` has a ``saliency``
output, and the audit scores it as the method ``embedded``, read from the same forward pass that gives
the class scores (no pass of its own). The embedded map explains the top-1 class."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agnostic_cam.errors import NonFiniteError, OptionError

EMBEDDED = "embedded"
SALIENCY = "saliency"


def has_saliency(model) -> bool:
    """Whether an ONNX file (path) or ModelProto has a ``saliency`` graph output."""
    import onnx

    try:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable file fails later with its own message
        return False
    return any(o.name == SALIENCY for o in proto.graph.output)


def methods_for(methods: str, flag: bool, model, default: str) -> str:
    """The audit's methods: with ``--embedded`` the embedded map first (plus ``--methods`` when given);
    without it, a file with a ``saliency`` output and no ``--methods`` is audited on that map alone."""
    if flag:
        return EMBEDDED if methods == default else f"{EMBEDDED},{methods}"
    return EMBEDDED if methods == default and has_saliency(model) else methods


def check(ctx) -> None:
    """Preflight: the graph has the output, the audit explains the top-1 class of a classifier."""
    if SALIENCY not in ctx.ex.adapter.engine(()).output_names:
        raise OptionError("method 'embedded' reads the model's own 'saliency' output, which this ONNX file does not "
                          "have; write one with `agnostic-cam embed MODEL.onnx --method cam -o OUT.onnx`")
    if ctx.cfg.target is not None or ctx.cfg.task:
        raise OptionError("the embedded map explains the top-1 class of a classifier: drop --target / --task with it")


@dataclass
class Maps:
    """What the audit reads of an explanation, for the embedded map."""

    heatmap: np.ndarray
    degenerate: None = None


def predict(ctx, batch) -> tuple[np.ndarray, np.ndarray, Maps]:
    """(model input, outputs float64, the embedded maps) from one forward pass."""
    ad = ctx.ex.adapter
    x = ad.prepare(ctx.pre.to_batch([b.rgb for b in batch]))
    out, sal = ad.engine(x.shape[1:]).run(x, [ad.output_name, SALIENCY])
    out = np.asarray(out, np.float64)
    if not np.isfinite(out).all():
        raise NonFiniteError(f"the model's output is NaN/Inf on {batch[0].item.file!r} (a finite image)",
                             where="model output")
    return x, out, Maps(np.asarray(sal, np.float32))
