"""Ablation-CAM (Desai & Ramaswamy 2020, eq. 3), forward-only on ONNX Runtime.

w_c = (y - y_c) / y, where y is the target score and y_c the score with channel c of the
layer's activation set to zero. Only the tail of the graph after the layer runs again, with
the ablated activations batched. Channels that are already all zero are not re-run: ablating
them changes nothing, so y_c = y and w_c = 0 exactly.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, LayerCapture, Needs, register
from agnostic_cam.options import positive_int


@register("ablationcam")
class AblationCAM(CamMethod):
    needs = Needs.ACTIVATIONS | Needs.TAIL

    def __init__(self, batch_size: int | None = None):
        self.batch_size = positive_int("batch_size", batch_size, optional=True)

    def weights(self, cap: LayerCapture) -> np.ndarray:
        acts = cap.activations
        n, c = acts.shape[:2]
        bs = self.batch_size or max(cap.batch_size, 64)
        y = cap.scores.astype(np.float64)
        ablated = np.repeat(y[:, None], c, axis=1)
        live = [np.flatnonzero(np.abs(a).reshape(c, -1).max(axis=1) > 0) for a in acts]
        with cap.progress_bar(sum(len(v) for v in live), "Ablation-CAM") as bar:
            for i, chans in enumerate(live):
                for lo in range(0, len(chans), bs):
                    chunk = chans[lo:lo + bs]
                    batch = np.repeat(acts[i][None], len(chunk), axis=0)
                    batch[np.arange(len(chunk)), chunk] = 0
                    ablated[i, chunk] = cap.row_scores(cap.tail(batch, np.full(len(chunk), i)), i)
                    bar.update(len(chunk))
        # w_c is a difference of two rounded scores: its rounding is ~eps * (|y| + |y_c|) / |y|
        self.weight_noise = (np.abs(y)[:, None] + np.abs(ablated)) / np.maximum(np.abs(y)[:, None], 1e-30)
        return (y[:, None] - ablated) / y[:, None]
