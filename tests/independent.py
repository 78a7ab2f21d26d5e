"""References written outside the library, shared by tests (issue 29: a reference must not call
the library's helper for the part under test)."""
from __future__ import annotations

import numpy as np


def eigen_heatmaps(acts: np.ndarray, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Eigen-CAM of (N, C, h, w) activations by a plain numpy SVD (pytorch-grad-cam's
    get_2d_projection: centred over positions, projected on the first right singular vector),
    ReLU'd and upscaled as pytorch-grad-cam does (scale_cam_image per layer, then normalised again).
    A principal direction's sign is arbitrary: per image, the heatmaps of both signs (+p, -p)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    out = []
    for a in np.asarray(acts, np.float64):
        flat = a.reshape(a.shape[0], -1).T
        flat = flat - flat.mean(axis=0)
        p = (flat @ np.linalg.svd(flat, full_matrices=False)[2][0]).reshape(a.shape[1:])
        out.append(tuple(scale_cam_image(scale_cam_image(np.maximum(s * p, 0)[None].astype(np.float32),
                                                         (size[1], size[0])))[0] for s in (1, -1)))
    return out


def eigen_diff_up_to_sign(acts: np.ndarray, ours: np.ndarray) -> float:
    """Max abs difference between ``ours`` (N, H, W) heatmaps and :func:`eigen_heatmaps` of
    ``acts``, with the better sign per image."""
    refs = eigen_heatmaps(acts, ours.shape[1:])
    return float(max(min(np.abs(o - r).max() for r in pair) for o, pair in zip(ours, refs)))
