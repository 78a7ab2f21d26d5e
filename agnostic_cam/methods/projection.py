"""Principal-component projections of (N, C, h, w) maps, shared by the Eigen-family methods and
the ``eigen_smooth`` option (pytorch-grad-cam's ``get_2d_projection`` and its variants).

Per image, the (h*w, C) matrix of channel values at each position is centred over positions and
projected on its first principal direction. The sign of a principal direction is arbitrary;
each function states the rule that fixes it.
"""
from __future__ import annotations

import numpy as np


def _centred(a: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (h*w, C) float64, centred over positions, NaN -> 0."""
    m = np.nan_to_num(a.astype(np.float64)).reshape(a.shape[0], -1).T
    return m - m.mean(axis=0)


def _principal(m: np.ndarray) -> np.ndarray:
    """(P, C) centred -> (P,) projection on the first right singular vector."""
    _, _, vt = np.linalg.svd(m, full_matrices=False)
    return m @ vt[0]


# Below this share of the activations' scale, the channel-mean map does not decide a sign: after a
# LayerNorm with its initial weights every token's channels average to exactly 0, so the mean map is
# float rounding (1e-8 of the scale) and PyTorch and ONNX Runtime could pick opposite signs.
FLAT = 1e-5


def first_component_projection(acts: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> (N, h, w): projection on the first principal direction, signed so the map
    correlates positively with the channel mean (it highlights where the layer is active).

    Where that correlation is below float rounding (|<p/|p|, mean map - its mean>| < ``FLAT`` x
    sqrt(h*w) x the activations' RMS: a flat channel-mean map, as after a LayerNorm), the sign makes
    the map's largest-magnitude value positive instead (Seg-Eigen-CAM's rule), so every framework
    gives the same map. Volumes: (N, C, d, h, w) -> (N, d, h, w), every position of the volume a row."""
    out = np.empty((acts.shape[0], *acts.shape[2:]), dtype=np.float32)
    for i, a in enumerate(acts):
        a = np.nan_to_num(a.astype(np.float64))
        p = _principal(_centred(a))
        mean = a.mean(axis=0).reshape(-1)
        norm = np.linalg.norm(p)
        decisive = np.dot(p, mean - mean.mean()) / (norm if norm > 0 else 1.0)
        if abs(decisive) >= FLAT * np.sqrt(p.size) * np.sqrt(np.mean(a * a)):
            flip = decisive < 0
        else:
            flip = abs(p.min()) > abs(p.max())
        out[i] = (-p if flip else p).reshape(out.shape[1:])
    return out


def sign_corrected_projection(acts: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> (N, h, w): the projection flipped when |min| > |max| (Seg-Eigen-CAM, eq. 13),
    so the strongest response is positive."""
    n, c, h, w = acts.shape
    out = np.empty((n, h, w), dtype=np.float32)
    for i, a in enumerate(acts):
        p = _principal(_centred(a))
        out[i] = (-p if abs(p.min()) > abs(p.max()) else p).reshape(h, w)
    return out


KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")


def _kernel(x: np.ndarray, kernel: str, gamma: float, degree: int, coef0: float) -> np.ndarray:
    """(P, C) -> (P, P) kernel matrix, with scikit-learn's kernel definitions."""
    if kernel == "linear":
        return x @ x.T
    if kernel == "poly":
        return (gamma * (x @ x.T) + coef0) ** degree
    if kernel == "sigmoid":
        return np.tanh(gamma * (x @ x.T) + coef0)
    if kernel == "rbf":
        sq = (x * x).sum(axis=1)
        return np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2 * (x @ x.T), 0))
    norm = np.linalg.norm(x, axis=1)
    xn = x / np.where(norm == 0, 1, norm)[:, None]
    return xn @ xn.T


def kernel_projection(acts: np.ndarray, kernel: str = "sigmoid", gamma: float | None = None,
                      degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """(N, C, h, w) -> (N, h, w): first kernel-PCA component of the centred (h*w, C) matrix.

    Kernel centring, top eigenvector v of the centred kernel, projection v * sqrt(lambda);
    gamma None is 1 / C. Sign: the largest-magnitude entry of v is positive (scikit-learn's
    ``svd_flip`` rule, so the result equals ``KernelPCA(n_components=1).fit_transform``).
    """
    n, c, h, w = acts.shape
    g = 1.0 / c if gamma is None else float(gamma)
    out = np.empty((n, h, w), dtype=np.float32)
    for i, a in enumerate(acts):
        k = _kernel(_centred(a), kernel, g, degree, coef0)
        row = k.mean(axis=0)
        k = k - row[None, :] - row[:, None] + row.mean()
        vals, vecs = np.linalg.eigh(k)
        lam, v = max(vals[-1], 0.0), vecs[:, -1]
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        out[i] = (v * np.sqrt(lam)).reshape(h, w)
    return out
