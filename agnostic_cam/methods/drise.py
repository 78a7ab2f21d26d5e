"""D-RISE (Petsiuk et al. 2021, "Black-box Explanation of Object Detectors via Saliency Maps", Sec. 3).

RISE for detectors: random masks M_i (as RISE's, Sec. 3.2 of the 2018 paper), each masked image's
detections D_j = (L_j, O_j, P_j) compared with the explained box d_t = (L_t, one-hot P_t of its
label c) by s(d_t, D_j) = IoU(L_t, L_j) * cos(P_t, P_j) * O_j (eq. 2-4), w_i = max_j s (eq. 5),
map = sum_i w_i M_i / m. Forward-only (ONNX Runtime), batched; the target must be a
:class:`~agnostic_cam.targets.tasks.DetectionBoxes`.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.core.imaging import minmax
from agnostic_cam.core.options import positive_int
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.methods.base import register
from agnostic_cam.methods.perturb import LayerFreeMethod, baselines, check_baseline
from agnostic_cam.methods.rise import rise_masks
from agnostic_cam.targets.tasks import box_iou, check_yolo_shape


def similarity(out: np.ndarray, fmt: str, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(M,) D-RISE weights of output rows ``out`` for the explained ``boxes`` (B, 4) / ``labels`` (B,):
    sum over the boxes of max over detections of IoU * cosine(one-hot label, class scores) * objectness."""
    out = np.asarray(out, np.float64)
    if fmt == "torchvision":  # (M, D, 6) rows [x1, y1, x2, y2, score, label]
        det, score, lab = out[..., :4], out[..., 4], np.rint(out[..., 5])
        cos = [(lab == c).astype(np.float64) for c in labels]  # the class vector is known as its argmax only
        obj = score
    else:  # (M, 4+K, A) or (M, A, 4+K), (cx, cy, w, h) and K class scores
        check_yolo_shape(out.shape)
        o = np.swapaxes(out, 1, 2) if out.shape[1] < out.shape[2] else out
        cx, cy, w, h = o[..., 0], o[..., 1], o[..., 2], o[..., 3]
        det = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        p = o[..., 4:]
        if int(labels.max(initial=0)) >= p.shape[-1] or int(labels.min(initial=0)) < 0:
            raise InputError(f"box labels {labels.tolist()} are out of range: the head has {p.shape[-1]} classes "
                             f"(0-{p.shape[-1] - 1})")
        norm = np.linalg.norm(p, axis=-1)
        cos = [np.divide(p[..., c], norm, out=np.zeros_like(norm), where=norm > 0) for c in labels]
        obj = p.max(-1)
    total = np.zeros(out.shape[0])
    for b, cs in zip(boxes, cos):
        ious = np.asarray(box_iou(b, det.reshape(-1, 4))).reshape(det.shape[:-1])
        total += (ious * cs * obj).max(-1)
    return total


@register("drise")
class DRISE(LayerFreeMethod):
    """D-RISE: random masks weighted by how well each masked image's detections match the box.

    Paper: V. Petsiuk, R. Jain, V. Manjunatha, V. I. Morariu, A. Mehra, V. Ordonez and K. Saenko,
    "Black-box Explanation of Object Detectors via Saliency Maps", CVPR 2021, arXiv:2006.03204
    (Sec. 3, eq. 2-5).

    For an explained box with corners L_t and label c (one-hot P_t), random masks M_1..M_m (as
    RISE's: a ``cells`` x ``cells`` grid kept with probability ``p``, upsampled, randomly shifted), and
    the detections D_j = (L_j, O_j, P_j) of the masked image I . M_i:

        s(d_t, D_j) = IoU(L_t, L_j) * cos(P_t, P_j) * O_j                      (eq. 2-4)
        w_i         = max_j s(d_t, D_j)                                         (eq. 5)
        raw         = 1 / m * sum_i w_i M_i,    heatmap = minmax(raw)          (N, H, W)

    Several boxes of one image: their w_i add up (one map for the image). The target must be a
    :class:`~agnostic_cam.targets.tasks.DetectionBoxes`; its ``format`` says how the output reads:
    ``"yolo"`` raw heads (N, 4+K, A) / (N, A, 4+K): every anchor is a detection, P_j its K class
    scores, O_j = max_k P_jk (YOLOv8 heads have no objectness; their confidence is the best class
    score); ``"torchvision"`` packed rows [x1, y1, x2, y2, score, label]: only the label's score is
    known, so cos = [label_j == c] and O_j = score_j. Forward-only (runs on ONNX Runtime),
    ``batch_size`` masked images per pass; masks shared by all images of the batch.

    Args:
        masks (int | numpy.ndarray): the number of masks m (the paper used 5000), or the masks
            themselves (m, H, W) in [0, 1]. Default 1000.
        cells (int): the grid size (the paper's 16). Default 16.
        p (float): the probability that a grid cell is kept, in (0, 1]. Default 0.5.
        seed (int | None): the masks' seed; None draws fresh masks every call. Default 0.
        baseline (float | str | numpy.ndarray): what masked pixels become: a number, "zero", "mean",
            "blur", or an array. Default 0.0.
        batch_size (int | None): masked images per forward pass; None uses the explainer's.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_images
        >>> from agnostic_cam.targets import DetectionBoxes
        >>> with torch.random.fork_rng(devices=[]):
        ...     _ = torch.manual_seed(0)  # a YOLO-style head (N, 4+3, 64): 64 anchors, 3 classes
        ...     head = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.ReLU(), nn.Conv2d(8, 7, 1), nn.Sigmoid(),
        ...                          nn.Flatten(2)).eval()
        >>> ex = Explainer.from_torch(head, "1", progress=False)
        >>> box = DetectionBoxes([[0.0, 0.0, 1.0, 1.0]], [2], format="yolo")
        >>> exp = ex.explain(tiny_images(), method="drise", target=box, masks=64, cells=4)
        >>> exp.heatmap.shape, exp.layer_used
        ((2, 32, 32), False)
        >>> round(float(exp.heatmap.min()), 3), round(float(exp.heatmap.max()), 3)
        (0.0, 1.0)
    """
    detection_only = True

    def __init__(self, masks: int | np.ndarray = 1000, cells: int = 16, p: float = 0.5, seed: int | None = 0,
                 baseline=0.0, batch_size: int | None = None):
        if isinstance(masks, np.ndarray):
            if masks.ndim != 3 or masks.size == 0 or not np.isfinite(masks).all() or masks.min() < 0 or masks.max() > 1:
                raise OptionError(f"masks must be an int or masks (m, H, W) with values in [0, 1]; got an array of shape "
                                  f"{masks.shape}, values in [{np.nanmin(masks) if masks.size else 0}, "
                                  f"{np.nanmax(masks) if masks.size else 0}]")
            self.given = masks.astype(np.float32)
        else:
            self.given = None
            positive_int("masks", masks, 1)
        self.masks = len(masks) if self.given is not None else int(masks)
        self.cells = positive_int("cells", cells, 1)
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 < p <= 1:
            raise OptionError(f"p (the probability that a grid cell is kept) must be in (0, 1]; got {p!r}")
        self.p, self.seed = float(p), seed
        self.baseline = check_baseline(baseline)
        self.batch_size = None if batch_size is None else positive_int("batch_size", batch_size, 1)

    def target_for(self, predict, target):
        from agnostic_cam.targets import DetectionBoxes

        if not isinstance(target, DetectionBoxes):
            raise OptionError("drise explains detected boxes: pass target=DetectionBoxes(boxes, labels, format='yolo' or "
                              f"'torchvision') (agnostic_cam.targets); got {type(target).__name__}")
        return target

    def _target(self, cap):
        return self.target_for(None, cap.target_fn)

    def compute(self, cap) -> np.ndarray:
        target, size = self._target(cap), cap.input_size
        if self.given is not None and self.given.shape[1:] != tuple(size):
            raise OptionError(f"the masks are {self.given.shape[1:]} but the images are {tuple(size)}")
        rng = np.random.default_rng(self.seed)
        base = baselines(cap, self.baseline)
        total = np.zeros((cap.n, size[0] * size[1]))
        bs = self.rows(cap)
        with cap.progress_bar(self.masks * cap.n, "D-RISE") as bar:
            for lo in range(0, self.masks, bs):
                hi = min(lo + bs, self.masks)
                m = self.given[lo:hi] if self.given is not None else rise_masks(rng, hi - lo, self.cells, self.p, size)
                flat = m.reshape(len(m), -1).astype(np.float64)
                for i in range(cap.n):
                    boxes, labels = target.boxes_for(i)
                    w = similarity(cap.forward(cap.blend(i, m, base[i])), target.format, boxes, labels)
                    total[i] += w @ flat
                    bar.update(len(m))
        return (total / self.masks).reshape(cap.n, *size).astype(np.float32)

    def heatmap(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return minmax(np.nan_to_num(np.asarray(raw, dtype=np.float32)))
