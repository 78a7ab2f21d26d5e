"""LeGrad (Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers via
Feature Formation Sensitivity", eqs. 4-6)."""
import numpy as np

from agnostic_cam.methods.base import AttentionMethod, Capture, Needs, register


@register("legrad")
class LeGrad(AttentionMethod):
    """LeGrad: the sensitivity of every block's own prediction to its attention.

    For block l, the score s_l is the target read from that block's tokens z_l mean-pooled and passed
    through the model's head (the part of the graph after the last block: final norm, pooling and
    classifier, or a CLIP projection then ``targets.Similarity``):

        s_l = head(norm(mean_t z_l))                           (N,)        eq. 4
        E_l = mean_{heads, queries}((d s_l / d A_l)⁺)          (N, T)      eq. 5
        map = mean_l E_l[patch tokens]                         (N, h, w)   eq. 6

    as torchcam 0.5's ``LeGrad`` computes it (prefix keys dropped; attention values are not
    multiplied into the gradients). Paper: W. Bousselham, A. Boggust, S. Chaybouti, H. Strobelt and
    H. Kuehne, "LeGrad: An Explainability Method for Vision Transformers via Feature Formation
    Sensitivity", 2024, arXiv:2404.03214.

    Options: ``attention=None`` (blocks to read: names from ``ex.layers(kind="attention")`` or
    indices), ``prefix_tokens=None`` (leading non-patch tokens; worked out, asked for when ambiguous).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_vit, tiny_images
        >>> ex = Explainer.from_torch(tiny_vit(), input_shape=(3, 32, 32), progress=False)
        >>> len(ex.layers(kind="attention"))  # one Softmax over keys per block, found in the ONNX export
        2
        >>> exp = ex.explain(tiny_images(), method="legrad", target=1)
        >>> exp.raw.shape, exp.heatmap.shape  # the 4 x 4 patch grid, the class token dropped
        ((2, 4, 4), (2, 32, 32))
    """

    needs = Needs.BLOCK_GRADIENTS

    def compute(self, cap: Capture) -> np.ndarray:
        att = cap.attention
        per_block = [np.maximum(g, 0).mean(axis=(1, 2), dtype=np.float64) for g in att.block_grads]  # (N, T)
        return att.patch_map(np.mean(per_block, axis=0)).astype(np.float32)
