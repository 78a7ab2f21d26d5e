"""LeGrad (Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers via
Feature Formation Sensitivity", eqs. 4-6)."""
import numpy as np

from agnostic_cam.methods.base import AttentionMethod, Capture, Needs, register


@register("legrad")
class LeGrad(AttentionMethod):
    """LeGrad: the sensitivity of every block's own prediction to its attention.

    For block l, the score s_l is the target read from that block's tokens z_l mean-pooled and passed
    through the model's head (the part of the graph after the last block: final norm, pooling and
    classifier, or a CLIP projection then ``targets.Similarity``): ``s_l = head(norm(mean_t z_l))``
    (eq. 4). Then ``E_l = mean over heads and queries of (d s_l / d A_l)⁺`` (eq. 5), prefix keys
    dropped, and the map is the mean of E_l over the blocks (eq. 6), as torchcam 0.5's ``LeGrad``
    computes it. Attention values are not multiplied into the gradients.

    Example::

        ex.explain(x, method="legrad", target=3)
    """

    needs = Needs.BLOCK_GRADIENTS

    def compute(self, cap: Capture) -> np.ndarray:
        att = cap.attention
        per_block = [np.maximum(g.astype(np.float64), 0).mean(axis=(1, 2)) for g in att.block_grads]  # (N, T)
        return att.patch_map(np.mean(per_block, axis=0)).astype(np.float32)
