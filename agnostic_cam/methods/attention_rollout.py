"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", eq. 1)."""
import numpy as np

from agnostic_cam.errors import InputError
from agnostic_cam.methods.base import AttentionMethod, Capture, Needs, register

FUSIONS = ("mean", "max", "min")


@register("attention_rollout")
class AttentionRollout(AttentionMethod):
    """Attention rollout: how much each patch flows into the class token through every block.

    Paper: S. Abnar and W. Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020,
    arXiv:2005.00928 (eq. 1); heads fused and entries discarded as in jacobgil/vit-explain.

        Â_b = rownorm((fuse_h(A_b) + I) / 2)        (N, T, T), low entries of fuse_h(A_b) zeroed first
        R = Â_L · ... · Â_1                          map = R[class token, patch tokens]

    Per block, the heads are fused (``head_fusion``: "mean", "max" or "min" over heads), the lowest
    ``discard_ratio`` of the fused entries are set to 0 (the class token's own entry is kept), the
    identity is added for the residual connection, ``Â = (A + I) / 2``, and the rows renormalised to
    sum to 1 (jacobgil/vit-explain's definition, rows normalised as the paper says). The rollout is
    ``R = Â_L ··· Â_1``; the map is the class token's row of R over the patch tokens (without a class
    token, the mean row). Needs only the attention probabilities (one forward pass).

    Options: ``head_fusion="mean"`` ("max", "min"), ``discard_ratio=0.0`` (in [0, 1)),
    ``attention=None`` (blocks to read: names from ``ex.layers(kind="attention")`` or indices),
    ``prefix_tokens=None`` (leading non-patch tokens; worked out, asked for when ambiguous).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_vit, tiny_images
        >>> ex = Explainer.from_torch(tiny_vit(), input_shape=(3, 32, 32), progress=False)
        >>> len(ex.layers(kind="attention"))  # one Softmax over keys per block, found in the ONNX export
        2
        >>> exp = ex.explain(tiny_images(), method="attention_rollout", head_fusion="max", discard_ratio=0.5)
        >>> exp.raw.shape, exp.heatmap.shape  # the 4 x 4 patch grid, the class token dropped
        ((2, 4, 4), (2, 32, 32))
    """

    needs = Needs.ATTENTION

    def __init__(self, head_fusion: str = "mean", discard_ratio: float = 0.0, attention=None,
                 prefix_tokens: int | None = None):
        super().__init__(attention, prefix_tokens)
        if head_fusion not in FUSIONS:
            raise InputError(f"head_fusion must be one of {FUSIONS}; got {head_fusion!r}")
        if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
            raise InputError(f"discard_ratio must be a number in [0, 1); got {discard_ratio!r}")
        self.head_fusion, self.discard_ratio = head_fusion, float(discard_ratio)

    def compute(self, cap: Capture) -> np.ndarray:
        att = cap.attention
        n, t = cap.n, att.tokens
        eye = np.eye(t, dtype=np.float64)
        r = np.broadcast_to(eye, (n, t, t)).copy()
        for a in att.maps:
            fused = getattr(np, self.head_fusion)(a.astype(np.float64), axis=1)  # (N, T, T)
            k = int(t * t * self.discard_ratio)
            if k:
                flat = fused.reshape(n, -1)
                low = np.argsort(flat, axis=1, kind="stable")[:, :k]
                for i in range(n):
                    drop = low[i][low[i] != 0]  # the class token's attention to itself is kept
                    flat[i, drop] = 0.0
            step = (fused + eye) / 2
            step /= step.sum(axis=-1, keepdims=True)
            r = step @ r
        return att.patch_map(att.query_rows(r)).astype(np.float32)
