"""SESS, Saliency Enhancing with Scaling and Sliding (Tursun et al. 2022), pytorch-grad-cam 1.5.7's definition.

A meta-method over any CAM (``base``, default Grad-CAM). Per image: resize it so its shorter side
is each of ``num_scales`` scales (window, window + round(window * 2/7), ...; bilinear), slide a
square window (default: the shorter side; step: the window) over every scale (border windows
shifted back inside), score each patch by the softmax probability of the target (clipped at 0),
drop the lowest ``pre_filter_ratio`` of patches, explain the rest with ``base`` (batched), weight
each patch heatmap by its score / the best score, paste it back where it came from, resize to the
image and fuse: the mean over the patches that cover a pixel with a value > ``theta`` (or the max),
then an 11x11 Gaussian blur (sigma 5, reflect-101 borders) and min-max scaling.
Patches have the window's size, so models with a fixed input size need square images.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.errors import OptionError
from agnostic_cam.core.imaging import minmax, resize_bilinear
from agnostic_cam.methods.base import Method, Needs, get_method, register
from agnostic_cam.targets import TargetSpec, select_scores


def window_starts(length: int, step: int, window: int) -> list[int]:
    starts = []
    for s in range(0, length, step):
        if s + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(s)
    return starts


def gaussian_blur(m: np.ndarray, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """(H, W) float32 blurred with a separable Gaussian, reflect-101 borders (OpenCV's default)."""
    k = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).astype(np.float32)
    r = size // 2
    p = np.pad(m, r, mode="reflect") if min(m.shape) > r else np.pad(m, r, mode="symmetric")
    p = sum(k[i] * p[i:i + m.shape[0], :] for i in range(size))
    return sum(k[i] * p[:, i:i + m.shape[1]] for i in range(size)).astype(np.float32)


@register("sess")
class SESS(Method):
    """SESS, saliency enhancing with scaling and sliding: a method's maps of many patches, fused.

    Paper: O. Tursun, S. Denman, S. Sridharan and C. Fookes, "SESS: Saliency Enhancing with Scaling
    and Sliding", ECCV 2022, arXiv:2207.01769; pytorch-grad-cam 1.5.7's definition.

    A meta-method over any method ``base``. Per image: resize it so its shorter side is each scale
    (window, window + round(window * scale_step_ratio), ..., ``num_scales`` of them), slide a square
    window over every scale (step ``step_size``; border windows shifted back inside) to get patches
    P_k, and score each by s_k = relu(softmax(f(P_k))_t) (the target t's probability). Drop the
    lowest ``pre_filter_ratio`` of patches, explain the rest with ``base`` (heatmaps H_k, batched),
    and paste each back where it came from, resized to the image, as M_k = (s_k / max_k s_k) H_k:

        F_ij    = mean of M_(k,ij) over the k with M_(k,ij) > theta      (pool="mean")
        F_ij    = max_k M_(k,ij)                                          (pool="max")
        heatmap = minmax(blur(F))       blur: 11 x 11 Gaussian, sigma 5 (smooth=True; else minmax(F))

    ``raw`` is the heatmap (N, H, W). Patches have the window's size, so models with a fixed input
    size need square images. Needs what ``base`` needs, plus forward passes.

    Args:
        base (str): the method explaining each patch. Default "gradcam".
        num_scales (int): the number of scales. Default 12.
        scales (list[int] | None): explicit scales (shorter sides, each >= the window) instead.
            Default None.
        scale_step_ratio (float): the step between scales as a fraction of the window. Default 2/7.
        window_size (int | None): the patch side; None: the image's shorter side. Default None.
        step_size (int | None): the sliding step; None: the window. Default None.
        pre_filter_ratio (float): the share of lowest-scored patches dropped, in [0, 1). Default 0.0.
        theta (float): the threshold of the mean fusion. Default 0.0.
        pool (str): "mean" or "max". Default "mean".
        smooth (bool): the final Gaussian blur. Default True.
        use_softmax_scores (bool): score patches by softmax probabilities (else raw outputs).
            Default True.
        batch_size (int): patches per ``base`` explanation. Default 32.
        **base_options (Any): options of the base method.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="sess", num_scales=2)
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 32, 32))
        >>> round(float(exp.heatmap.min()), 3), round(float(exp.heatmap.max()), 3)
        (0.0, 1.0)
    """

    runs_explanations = True  # fuses many explanations of patches itself (Method.explain_with)
    needs = Needs.LAYER_GRADIENTS | Needs.FORWARD  # those of the default base; an instance takes its base's

    def __init__(self, base: str = "gradcam", num_scales: int = 12, scales: list[int] | None = None,
                 scale_step_ratio: float = 2.0 / 7.0, window_size: int | None = None, step_size: int | None = None,
                 pre_filter_ratio: float = 0.0, theta: float = 0.0, pool: str = "mean", smooth: bool = True,
                 use_softmax_scores: bool = True, batch_size: int = 32, **base_options):
        if pool not in ("mean", "max"):
            raise OptionError(f"sess: pool must be 'mean' or 'max'; got {pool!r}")
        if not 0.0 <= pre_filter_ratio < 1.0:
            raise OptionError(f"sess: pre_filter_ratio must be in [0, 1); got {pre_filter_ratio!r}")
        if num_scales < 1 or batch_size < 1:
            raise OptionError(f"sess: num_scales and batch_size must be >= 1; got {num_scales}, {batch_size}")
        cls = get_method(base)
        if cls is SESS:
            raise OptionError("sess: base must be another method, e.g. 'gradcam'")
        self.base, self.base_options = cls.name, base_options
        cls(**base_options)  # unknown base options fail now, with the base's message
        self.needs = cls.needs | Needs.FORWARD
        self.num_scales, self.scales, self.ratio = num_scales, scales, scale_step_ratio
        self.window, self.step, self.pre_filter = window_size, step_size, pre_filter_ratio
        self.theta, self.pool, self.smooth, self.softmax, self.batch_size = theta, pool, smooth, use_softmax_scores, batch_size

    def _scales(self, window: int) -> list[int]:
        if self.scales is not None:
            bad = [s for s in self.scales if s < window]
            if bad:
                raise OptionError(f"sess: every scale must be at least the window size {window}; got {bad}")
            return list(self.scales)
        step = int(round(window * self.ratio))
        return [window + step * i for i in range(self.num_scales)]

    def _patches(self, img: np.ndarray, window: int, step: int):
        """img (C, H, W) -> patches (P, C, window, window) and (x1, y1, scaled W, scaled H) per patch."""
        h, w = img.shape[1:]
        patches, coords = [], []
        for s in self._scales(window):
            sh, sw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
            scaled = resize_bilinear(img, (sh, sw))
            for y in window_starts(sh, step, window):
                for x in window_starts(sw, step, window):
                    patches.append(scaled[:, y:y + window, x:x + window])
                    coords.append((x, y, sw, sh))
        return np.stack(patches), coords

    def explain_with(self, ex, x: np.ndarray, target) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """(maps (N, H, W) in [0, 1], classes, scores, outputs) for the validated batch ``x``."""
        nhwc = ex.adapter.layout == "NHWC"
        chw = x.transpose(0, 3, 1, 2) if nhwc else x
        n, _, h, w = chw.shape
        window = self.window or min(h, w)
        step = self.step or window
        out = ex.predict(x)
        spec = TargetSpec(target, n)
        classes = spec.indices(out)
        maps = np.empty((n, h, w), np.float32)
        for i in range(n):
            patches, coords = self._patches(chw[i], window, step)
            native = np.ascontiguousarray(patches.transpose(0, 2, 3, 1)) if nhwc else patches
            p = ex.predict(native).astype(np.float64)
            if self.softmax:
                p = np.exp(p - p.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
            s = np.asarray(spec.fn(p) if classes is None else p[:, classes[i]], dtype=np.float32)
            s = np.maximum(s, 0)
            order = np.argsort(s)[int(len(s) * self.pre_filter):]
            top = s[order[-1]]
            weights = s[order] / top if top > 0 else np.ones(len(order), np.float32)
            total = np.zeros((h, w), np.float32)
            counts = np.zeros((h, w), np.float32)
            t = spec.fn if classes is None else int(classes[i])
            for lo in range(0, len(order), self.batch_size):
                idx = order[lo:lo + self.batch_size]
                heat = ex.explain(native[idx], self.base, target=t, **self.base_options).heatmap
                for cam, wt, k in zip(heat, weights[lo:lo + self.batch_size], idx):
                    x1, y1, sw, sh = coords[k]
                    canvas = np.zeros((sh, sw), np.float32)
                    canvas[y1:y1 + window, x1:x1 + window] = cam * wt
                    full = resize_bilinear(canvas, (h, w))
                    if self.pool == "max":
                        np.maximum(total, full, out=total)
                    else:
                        mask = full > self.theta
                        total[mask] += full[mask]
                        counts += mask
            cam = total if self.pool == "max" else np.divide(total, counts, out=np.zeros_like(total), where=counts > 0)
            maps[i] = gaussian_blur(cam) if self.smooth else cam
        return minmax(maps), classes, select_scores(out, classes, spec.fn), out
