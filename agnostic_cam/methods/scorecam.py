"""Score-CAM (Wang et al. 2020, eq. 3-6), forward-only on ONNX Runtime.

Each channel is upsampled to the input size (bilinear, align_corners=True), min-max scaled
(eps 1e-8) and multiplied into the image; w = softmax over channels of the target scores of
those masked images. Exact savings: constant channels all give the zero image (scored once for
the whole call), identical channels are scored once, and masked images are built one batch at a
time so memory grows with the batch size, never with the channel count.
"""
import numpy as np

from agnostic_cam.core.imaging import resize
from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.core.options import positive_int


def softmax(s: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def channel_masks(acts: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """(M, h, w) channels -> (M, H, W) masks: align-corners upsampling, per-mask min-max (eps 1e-8).
    Volumes: (M, d, h, w) -> (M, D, H, W), trilinear."""
    up = resize(acts, size, align_corners=True)
    axes = tuple(range(1, up.ndim))
    lo = up.min(axis=axes, keepdims=True)
    hi = up.max(axis=axes, keepdims=True)
    return (up - lo) / (hi - lo + 1e-8)


@register("scorecam")
class ScoreCAM(CamMethod):
    """Score-CAM: each channel weighted by the score of the image masked with it (no gradient).

    Paper: H. Wang, Z. Wang, M. Du, F. Yang, Z. Zhang, S. Ding, P. Mardziel and X. Hu, "Score-CAM:
    Score-Weighted Visual Explanations for Convolutional Neural Networks", CVPR Workshops 2020,
    arXiv:1910.01279 (eq. 3-6).

    With A the target layer's activations (N, C, h, w), x the image (C_in, H, W) and S(.) the
    target's score, per image and channel:

        H_c = minmax(up(A_c))              (bilinear, align_corners=True, to (H, W); eps 1e-8)
        s_c = S(x * H_c)
        w   = softmax_c(s)
        cam = relu(sum_c w_c * A_c)

    Forward-only (runs on ONNX Runtime). Exact savings: constant channels all give the zero image
    (scored once), identical channels are scored once (``dedup``), and masked images are built one
    batch at a time.

    Args:
        batch_size (int | None): masked images per forward pass; None uses the explainer's.
            Default None.
        dedup (bool): score identical channels once (the weights are the same). Default True.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="scorecam", batch_size=8)
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> round(float(exp.heatmap.max()), 3)
        1.0
    """

    needs = Needs.ACTIVATIONS | Needs.FORWARD
    volumes = True

    def __init__(self, batch_size: int | None = None, dedup: bool = True):
        self.batch_size = positive_int("batch_size", batch_size, optional=True)
        self.dedup = dedup

    def weights(self, cap: Capture) -> np.ndarray:
        acts = cap.activations
        n, c = acts.shape[:2]
        bs = self.batch_size or cap.batch_size
        size = cap.input_size
        scores = np.empty((n, c), dtype=np.float64)
        zero_out = None  # model output for the all-zero image, shared by all constant channels
        plan = [self._distinct(a) for a in acts] if self.dedup else [(np.arange(c), np.arange(c), np.zeros(c, bool))] * n
        with cap.progress_bar(sum(len(p[0]) for p in plan), "Score-CAM") as bar:
            for i, (reps, inverse, const) in enumerate(plan):
                rep_scores = np.empty(len(reps), dtype=np.float64)
                for lo in range(0, len(reps), bs):
                    chunk = reps[lo:lo + bs]
                    masked = cap.masked_inputs(i, channel_masks(acts[i, chunk], size))
                    rep_scores[lo:lo + bs] = cap.row_scores(cap.forward(masked), i)
                    bar.update(len(chunk))
                scores[i] = rep_scores[inverse] if len(reps) else 0.0
                if const.any():
                    if zero_out is None:
                        zero_out = cap.forward(np.zeros_like(cap.x[:1]))
                    scores[i, const] = cap.row_scores(zero_out, i)[0]
        return softmax(scores, axis=1)

    @staticmethod
    def _distinct(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For one image's (C, h, w) activations: representative channels to score, the map
        from every channel to its representative, and which channels are constant."""
        flat = a.reshape(a.shape[0], -1)
        const = flat.max(axis=1) == flat.min(axis=1)
        idx = np.flatnonzero(~const)
        inverse = np.zeros(a.shape[0], dtype=np.int64)
        if idx.size == 0:
            return idx, inverse, const
        _, first, inv = np.unique(flat[idx], axis=0, return_index=True, return_inverse=True)
        inverse[idx] = inv.reshape(-1)
        return idx[first], inverse, const
