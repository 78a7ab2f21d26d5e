"""Eigen-CAM (Muhammad & Yeasin 2020): projection of the activations on their first principal component.

Per image, the (h*w, C) activation matrix is centred over positions and projected on its first
right singular vector. The sign of a singular vector is arbitrary; we choose it so the map
correlates positively with the channel-mean activation, so the map highlights where the layer
is active. Target-independent, forward-only (runs on ONNX Runtime).
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, LayerCapture, Needs, register


def first_component_projection(acts: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> (N, h, w) projections on the first right singular vector, sign-fixed."""
    n, c, h, w = acts.shape
    out = np.empty((n, h, w), dtype=np.float32)
    for i, a in enumerate(np.nan_to_num(acts)):
        m = a.reshape(c, -1).T
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        p = m @ vt[0]
        if np.dot(p, a.mean(axis=0).reshape(-1)) < 0:
            p = -p
        out[i] = p.reshape(h, w)
    return out


@register("eigencam")
class EigenCAM(CamMethod):
    needs = Needs.ACTIVATIONS

    def compute(self, cap: LayerCapture) -> np.ndarray:
        return first_component_projection(cap.activations)
