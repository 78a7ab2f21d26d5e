"""CAM (Zhou et al. 2016, eq. 2): w_c = the linear classifier's weight of the target class.

Defined for a head that is global-average-pool + linear after the target layer. The weights are
read off the head itself through the ONNX tail graph, whatever the framework: for such a head
f(A) = W mean_hw(A) + b, so W[:, c] = f(1_c) - f(0). The head is then checked to really be that
(affine and blind to where activations sit); otherwise a clear error points to Grad-CAM, which
generalises CAM to any head.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register
from agnostic_cam.errors import InputError, ModelError


def linear_head(cap: Capture) -> tuple[np.ndarray, np.ndarray]:
    """(W (K, C), b (K,)) of a GAP + linear head, or ValueError if the head is not one."""
    a = cap.activations
    n, c, h, w = a.shape
    probes = np.zeros((c + 1, c, h, w), dtype=np.float32)
    probes[np.arange(1, c + 1), np.arange(c)] = 1.0
    out = cap.tail(cap.native_from_chw(probes), np.zeros(c + 1, dtype=np.int64)).astype(np.float64)
    b = out[0]
    W = (out[1:] - b).T
    rng = np.random.default_rng(0)
    shuffled = a.reshape(n, c, -1)[..., rng.permutation(h * w)].reshape(a.shape)
    pred = a.mean(axis=(2, 3)) @ W.T + b
    for name, got in (("activations", cap.outputs), ("shuffled activations", cap.tail(cap.native_from_chw(shuffled), np.arange(n)))):
        scale = np.abs(got).max() + 1e-6
        if np.abs(got - pred).max() > 1e-3 * scale:
            raise ModelError(
                "method 'cam' needs a global-average-pool + linear head right after the target layer "
                f"(the model's output must equal W * mean(A) + b for the {name}); this model's head is "
                "something else (a softmax? several layers? flatten without pooling?). Use 'gradcam', "
                "which equals CAM on such heads and works on any head, or output='logits' if the model "
                "ends in a softmax.")
    return W, b


@register("cam")
class CAM(CamMethod):
    """CAM, class activation mapping: the layer's channels weighted by the linear classifier's weights.

    Paper: B. Zhou, A. Khosla, A. Lapedriza, A. Oliva and A. Torralba, "Learning Deep Features for
    Discriminative Localization", CVPR 2016, arXiv:1512.04150 (eq. 2).

    For a head f(A) = W mean_hw(A) + b right after the target layer (global average pooling and a
    linear layer), with A the target layer's activations (N, C, h, w), W (K, C) and k the target
    class:

        w_c = W[k, c]
        cam = relu(sum_c w_c * A_c)

    W is read off the head itself through the ONNX tail graph (W[:, c] = f(1_c) - f(0)), whatever
    the framework; the head is then checked to be affine and blind to where activations sit, else
    a ``ModelError`` points to Grad-CAM, which equals CAM on such heads (the example checks it) and
    works on any head. Forward-only; targets must be class indices (int, list of ints or None).

    Options: none of its own; ``eigen_smooth=False``, ``aug_smooth=False`` and ``batch_size=None``.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> exp = ex.explain(x, method="cam")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> np.allclose(exp.heatmap, ex.explain(x, "gradcam").heatmap, atol=1e-5)
        True
    """

    needs = Needs.ACTIVATIONS | Needs.TAIL

    def weights(self, cap: Capture) -> np.ndarray:
        if cap.classes is None:
            raise InputError("method 'cam' takes class-index targets (int, list of ints or None), not a callable")
        W, _ = linear_head(cap)
        return W[cap.classes]
