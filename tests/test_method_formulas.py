"""Every weight formula against an independent, loop-by-loop NumPy reference on hand-built arrays."""
import math

import numpy as np
import pytest

from agnostic_cam.core.imaging import resize_bilinear
from agnostic_cam.methods import Capture, get_method


def make_cap(rng, n=2, c=5, h=4, w=3, H=12, W=9, layout="NCHW"):
    acts = np.maximum(rng.normal(size=(n, c, h, w)), 0).astype(np.float32)
    acts[0, 1] = 0.0                     # a dead channel
    acts[1, 3] = acts[1, 2]              # a duplicated channel
    grads = rng.normal(size=(n, c, h, w)).astype(np.float32)
    grads[0, 0, 0, 0] = 0.0              # a zero gradient (Grad-CAM++ alpha := 0)
    shape = (n, 3, H, W) if layout == "NCHW" else (n, H, W, 3)
    x = rng.uniform(size=shape).astype(np.float32)
    out = rng.normal(size=(n, 4))
    classes = np.array([1, 3])[:n]
    return Capture(x, layout, out, out[np.arange(n), classes], classes, None, acts, grads)


def ref_cam(weights, acts):
    n, c, h, w = acts.shape
    cam = np.zeros((n, h, w))
    for i in range(n):
        for k in range(c):
            cam[i] += weights[i][k] * acts[i, k]
    return cam


def weights_loop(cap, fn):
    n, c = cap.activations.shape[:2]
    return np.array([[fn(cap.grads[i, k].astype(np.float64), cap.activations[i, k].astype(np.float64))
                      for k in range(c)] for i in range(n)])


def gradcampp_w(g, a):
    s = a.sum()
    tot = 0.0
    for gv in g.ravel():
        if gv == 0:
            continue
        alpha = gv**2 / (2 * gv**2 + s * gv**3 + 1e-6)
        tot += alpha * max(gv, 0.0)
    return tot


REFS = {
    "gradcam": lambda cap: ref_cam(weights_loop(cap, lambda g, a: g.sum() / g.size), cap.activations),
    "gradcam++": lambda cap: ref_cam(weights_loop(cap, gradcampp_w), cap.activations),
    "xgradcam": lambda cap: ref_cam(weights_loop(cap, lambda g, a: (g * a).sum() / (a.sum() + 1e-7)), cap.activations),
    "hirescam": lambda cap: (cap.grads.astype(np.float64) * cap.activations).sum(axis=1),
    "layercam": lambda cap: (np.where(cap.grads > 0, cap.grads, 0) * cap.activations).sum(axis=1),
}


@pytest.mark.parametrize("name", sorted(REFS))
def test_gradient_cams_match_reference(rng, name):
    cap = make_cap(rng)
    ours = get_method(name)().compute(cap)
    np.testing.assert_allclose(ours, REFS[name](cap), rtol=1e-4, atol=1e-5)


def test_gradcampp_is_not_just_gradients(rng):
    """Guard against the torchcam bug: the alpha denominator must matter."""
    cap = make_cap(rng)
    cap.activations = cap.activations * 50
    with_big_a = get_method("gradcam++")().weights(cap)
    cap.activations = cap.activations / 50
    assert not np.allclose(with_big_a, get_method("gradcam++")().weights(cap))


def linear_model(rng, k=4, layout="NCHW"):
    """A NumPy 'model': logits = W @ mean-pooled-per-channel-and-quadrant features."""
    wq = rng.normal(size=(k, 3 * 4))

    def forward(x):
        x = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
        H, W = x.shape[2:]
        q = [x[:, :, :H // 2, :W // 2], x[:, :, :H // 2, W // 2:], x[:, :, H // 2:, :W // 2], x[:, :, H // 2:, W // 2:]]
        feats = np.concatenate([p.mean(axis=(2, 3)) for p in q], axis=1)
        return feats @ wq.T
    return forward


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dedup", [True, False])
def test_scorecam_matches_reference(rng, layout, dedup):
    cap = make_cap(rng, layout=layout)
    cap.forward = linear_model(rng, layout=layout)
    cap.outputs = cap.forward(cap.x)
    cap.scores = cap.outputs[np.arange(2), cap.classes]
    cap.batch_size = 3
    ours = get_method("scorecam")(dedup=dedup).weights(cap)
    n, c = cap.activations.shape[:2]
    H, W = cap.input_size
    ref = np.zeros((n, c))
    for i in range(n):
        for k in range(c):
            # align-corners bilinear upsampling, written out point by point
            a = cap.activations[i, k].astype(np.float64)
            h, w = a.shape
            up = np.zeros((H, W))
            for y in range(H):
                for xx in range(W):
                    sy, sx = y * (h - 1) / (H - 1), xx * (w - 1) / (W - 1)
                    y0, x0 = int(math.floor(sy)), int(math.floor(sx))
                    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                    fy, fx = sy - y0, sx - x0
                    up[y, xx] = (a[y0, x0] * (1 - fy) * (1 - fx) + a[y0, x1] * (1 - fy) * fx
                                 + a[y1, x0] * fy * (1 - fx) + a[y1, x1] * fy * fx)
            m = (up - up.min()) / (up.max() - up.min() + 1e-8)
            xi = cap.x[i] * (m[None] if layout == "NCHW" else m[..., None])
            ref[i, k] = cap.forward(xi[None])[0, cap.classes[i]]
        ref[i] = np.exp(ref[i] - ref[i].max()) / np.exp(ref[i] - ref[i].max()).sum()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_ablationcam_matches_reference(rng):
    cap = make_cap(rng)
    wt = rng.normal(size=(4, cap.activations.shape[1]))
    cap.tail = lambda acts, image: np.tanh(acts.mean(axis=(2, 3))) @ wt.T + 1.0
    cap.outputs = cap.tail(cap.activations, np.arange(2))
    cap.scores = cap.outputs[np.arange(2), cap.classes]
    ours = get_method("ablationcam")(batch_size=2).weights(cap)
    for i in range(2):
        y = cap.scores[i]
        for k in range(cap.activations.shape[1]):
            a = cap.activations[i].copy()
            a[k] = 0
            yk = cap.tail(a[None], np.array([i]))[0, cap.classes[i]]
            np.testing.assert_allclose(ours[i, k], (y - yk) / y, rtol=1e-5, atol=1e-7)


def test_eigencam_is_first_principal_component(rng):
    cap = make_cap(rng)
    ours = get_method("eigencam")().compute(cap)
    for i in range(2):
        a = cap.activations[i].astype(np.float64)
        m = a.reshape(a.shape[0], -1).T
        m = m - m.mean(axis=0)
        evals, evecs = np.linalg.eigh(m.T @ m)           # covariance eigenvectors, not SVD
        ref = (m @ evecs[:, -1]).reshape(a.shape[1:])
        sign = np.sign(np.dot(ours[i].ravel(), ref.ravel()))
        np.testing.assert_allclose(ours[i], sign * ref, rtol=1e-4, atol=1e-5)
        # our sign convention: positively correlated with the channel-mean activation
        assert np.dot(ours[i].ravel(), a.mean(axis=0).ravel()) >= 0


def test_cam_reads_linear_head(rng):
    cap = make_cap(rng)
    W, b = rng.normal(size=(4, 5)), rng.normal(size=4)
    cap.tail = lambda acts, image: acts.mean(axis=(2, 3)) @ W.T + b
    cap.outputs = cap.tail(cap.activations, np.arange(2))
    np.testing.assert_allclose(get_method("cam")().weights(cap), W[cap.classes], rtol=1e-5, atol=1e-6)
    cap.tail = lambda acts, image: acts.max(axis=(2, 3)) @ W.T + b   # max-pool head: not CAM-able
    cap.outputs = cap.tail(cap.activations, np.arange(2))
    with pytest.raises(ValueError, match="global-average-pool"):
        get_method("cam")().weights(cap)


def test_resize_used_by_scorecam_is_align_corners():
    a = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    up = resize_bilinear(a, (3, 3), align_corners=True)
    np.testing.assert_allclose(up[0], [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])
