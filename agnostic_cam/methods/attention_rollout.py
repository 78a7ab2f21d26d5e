"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", eq. 1)."""
import numpy as np

from agnostic_cam.errors import InputError
from agnostic_cam.methods.base import AttentionMethod, Capture, Needs, register

FUSIONS = ("mean", "max", "min")


@register("attention_rollout")
class AttentionRollout(AttentionMethod):
    """Attention rollout: how much each patch flows into the class token through every block.

    Per block, the heads are fused (``head_fusion``: "mean", "max" or "min" over heads), the lowest
    ``discard_ratio`` of the fused entries are set to 0 (the class token's own entry is kept), the
    identity is added for the residual connection, ``Â = (A + I) / 2``, and the rows renormalised to
    sum to 1 (jacobgil/vit-explain's definition, rows normalised as the paper says). The rollout is
    ``R = Â_L ··· Â_1``; the map is the class token's row of R over the patch tokens (without a class
    token, the mean row). Needs only the attention probabilities (one forward pass).

    Example::

        ex.explain(x, method="attention_rollout", head_fusion="max", discard_ratio=0.9)
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
