"""The one place an explanation is computed: target -> capture -> method -> checks -> Explanation.

:func:`explain_batch` is the whole pipeline for one batch, one method and one target layer. The
explainer (the front door) validates the request and hands it here; the capture is built by a
:class:`~agnostic_cam.core.capture.Capturer` from the adapter's primitives, so adapters never call
back into the pipeline. ``aug_smooth`` runs the same steps once on the augmented batch.
Framework-free: imports no framework, adapter or engine.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from agnostic_cam.core import degenerate
from agnostic_cam.core import smoothing as sm
from agnostic_cam.core.capture import Capturer
from agnostic_cam.core.checks import check_finite, check_layer_map
from agnostic_cam.core.explanation import Explanation
from agnostic_cam.errors import OptionError
from agnostic_cam.targets import TargetSpec


def check_volumes(m: Any, x: np.ndarray, methods: dict) -> None:
    """A typed error when ``x`` holds volumes or clips (N, C, D, H, W) and method ``m`` explains 2-D
    images only; it names the methods of ``methods`` (name -> class) that do explain them."""
    if x.ndim == 5 and not m.volumes:
        can = ", ".join(repr(k) for k, c in sorted(methods.items()) if c.volumes)
        raise OptionError(f"method {m.name!r} explains 2-D images only; for volumes and clips (N, C, D, H, W) use "
                          f"one of {can}")


def explain_batch(capturer: Capturer, m: Any, x: np.ndarray, target: Any, *, layer: str | None, layout: str,
                  predict: Callable[[np.ndarray], np.ndarray], progress: bool | None = None,
                  aug_smooth: bool = False, host: Any = None) -> Explanation:
    """Explain the validated batch ``x`` (N, ...) with the method instance ``m`` (a
    :class:`~agnostic_cam.methods.base.Method`) for ``target``.

    layer: the target layer's name (for the result); layout: the input's layout ('NCHW'/'NHWC');
    predict: the model's outputs for a batch; host: what a meta-method's ``explain_with`` runs its
    own explanations on (the explainer).
    """
    target = m.target_for(lambda: predict(x), target)
    if m.runs_explanations:
        if aug_smooth:
            raise OptionError(f"aug_smooth does not apply to {m.name!r}, which already fuses many views")
        heat, classes, scores, out = m.explain_with(host, x, target)
        return degenerate.mark(Explanation(heatmap=heat, raw=heat, targets=classes, scores=scores, method=m.name,
                                           layer=layer, outputs=out, layer_used=m.uses_layer), None)
    spec = TargetSpec(target, x.shape[0])
    n = x.shape[0]
    if aug_smooth:  # pytorch-grad-cam's six test-time augmentations, one batched capture
        x, spec = sm.augment(x, layout), sm.augment_targets(spec)
    cap = capturer(x, spec, m.needs, m.rule, progress, m.name, m.batch_size, m.attention, m.prefix_tokens)
    if m.uses_layer:
        check_layer_map(cap.activations, layer, cap.input_size)
    raw = np.asarray(m.compute(cap), dtype=np.float32)
    check_finite(raw, "method result", f"method {m.name!r} produced NaN/Inf from finite inputs; please report it")
    heat = m.heatmap(raw, cap.input_size)
    if aug_smooth:
        return degenerate.mark(Explanation(
            heatmap=sm.deaugment(heat, n), raw=sm.deaugment(raw, n), targets=sm.identity_rows(cap.classes, n),
            scores=sm.identity_rows(cap.scores, n), method=m.name, layer=layer,
            outputs=sm.identity_rows(cap.outputs, n), meta={"aug_smooth": True}, layer_used=m.uses_layer))
    classes = getattr(target, "classes", cap.classes)  # a target object may name the class it explains (finercam)
    return degenerate.mark(Explanation(heatmap=heat, raw=raw, targets=classes, scores=cap.scores, method=m.name,
                                       layer=layer, outputs=cap.outputs, layer_used=m.uses_layer), m.scale)

