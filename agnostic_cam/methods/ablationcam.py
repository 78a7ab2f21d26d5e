"""Ablation-CAM (Desai & Ramaswamy 2020, eq. 3), forward-only on ONNX Runtime.

w_c = (y - y_c) / y, where y is the target score and y_c the score with channel c of the
layer's tensor set to the ablation value. Only the tail of the graph after the layer runs again,
with the ablated tensors batched. The channel is ablated in the layer's own layout: for a token
layer (N, T, C) channel c is set on every token, class token included, as pytorch-grad-cam's
``AblationLayerVit`` does. Channels that are already all zero are not re-run when the value is
0: ablating them changes nothing, so y_c = y and w_c = 0 exactly.

value: the ablation value, 0.0 by default (the paper's rule). pytorch-grad-cam writes min - 1e7
instead on layers whose minimum is not 0 (e.g. a ViT's LayerNorm output); pass another value here
to ablate with it.
"""
import numpy as np

from agnostic_cam.errors import LayoutError, OptionError
from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.core.options import positive_int

@register("ablationcam")
class AblationCAM(CamMethod):
    """Ablation-CAM: each channel weighted by the score drop when it is ablated (no gradient).

    Paper: S. Desai and H. G. Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
    Network via Gradient-free Localization", WACV 2020, pp. 972-980 (eq. 3).

    With A the target layer's activations (N, C, h, w), y the target's score and y_c the score
    with channel c of A set to ``value`` (only the graph after the layer runs again, batched):

        w_c = (y - y_c) / y
        cam = relu(sum_c w_c * A_c)

    Token layers (N, T, C) ablate channel c on every token, class token included (pytorch-grad-cam's
    ``AblationLayerVit``). Channels already all zero are not re-run when ``value`` is 0: w_c = 0
    exactly. Forward-only (runs on ONNX Runtime).

    Args:
        batch_size (int | None): ablated copies per tail pass; None uses max(the explainer's, 64).
            Default None.
        value (float): the ablation value; 0.0 is the paper's rule (pytorch-grad-cam writes
            min - 1e7 on layers whose minimum is not 0, e.g. a ViT's LayerNorm output). Default 0.0.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="ablationcam", batch_size=16)
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

    needs = Needs.ACTIVATIONS | Needs.TAIL
    volumes = True

    def __init__(self, batch_size: int | None = None, value: float = 0.0):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise OptionError(f"value (the ablation value) must be a finite number; got {value!r}")
        self.batch_size = positive_int("batch_size", batch_size, optional=True)
        self.value = float(value)

    def _value(self, native: np.ndarray) -> float:
        return self.value

    def weights(self, cap: Capture) -> np.ndarray:
        c = cap.activations.shape[1]
        own = cap.native is not None  # a capture built by hand may carry the channel-first tensor only
        ax = cap.channel_axis if own else 1
        src = cap.native if own else cap.activations
        if ax is None or src.shape[ax] != c:
            raise LayoutError("ablationcam cannot tell which axis of the layer's own tensor holds the channels (it is "
                              "read through reshape=); pass layer_layout= instead, or use another method")
        native = np.moveaxis(src, ax, 1)  # (N, C, ...) in the layer's own layout
        bs = self.batch_size or max(cap.batch_size, 64)
        y = cap.scores.astype(np.float64)
        ablated = np.repeat(y[:, None], c, axis=1)
        values = [self._value(a) for a in native]
        live = [np.flatnonzero(np.abs(a).reshape(c, -1).max(axis=1) > 0) if v == 0 else np.arange(c)
                for a, v in zip(native, values)]
        with cap.progress_bar(sum(len(v) for v in live), "Ablation-CAM") as bar:
            for i, chans in enumerate(live):
                for lo in range(0, len(chans), bs):
                    chunk = chans[lo:lo + bs]
                    batch = np.repeat(native[i][None], len(chunk), axis=0)
                    batch[np.arange(len(chunk)), chunk] = values[i]
                    out = cap.tail(np.moveaxis(batch, 1, ax), np.full(len(chunk), i))
                    ablated[i, chunk] = cap.row_scores(out, i)
                    bar.update(len(chunk))
        # w_c is a difference of two rounded scores: its rounding is ~eps * (|y| + |y_c|) / |y|
        self.weight_noise = (np.abs(y)[:, None] + np.abs(ablated)) / np.maximum(np.abs(y)[:, None], 1e-30)
        return (y[:, None] - ablated) / y[:, None]
