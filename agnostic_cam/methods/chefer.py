"""Generic attention explainability (Chefer, Gur & Wolf, ICCV 2021, eqs. 5-6)."""
import numpy as np

from agnostic_cam.methods.base import AttentionMethod, Capture, Needs, register


@register("chefer")
class Chefer(AttentionMethod):
    """Chefer et al.'s relevance propagation through self-attention (ICCV 2021, "Generic
    Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers").

    Starting from ``R = I`` (T x T), every block b updates (eqs. 5-6)

        Ā_b = mean_h((∇A_b ⊙ A_b)⁺)                 (N, T, T)
        R = R + Ā_b · R                              map = R[class token, patch tokens]

    where A_b (heads, T, T) are the block's
    attention probabilities and ∇A_b = d score / d A_b; the map is the class token's row of R over
    the patch tokens (without a class token, the mean row). The gradients come from the ONNX
    graph's gradient backend, so the method runs whatever attention kernel the model used.

    Options: ``attention=None`` (blocks to read: names from ``ex.layers(kind="attention")`` or
    indices), ``prefix_tokens=None`` (leading non-patch tokens; worked out, asked for when ambiguous).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_vit, tiny_images
        >>> ex = Explainer.from_torch(tiny_vit(), input_shape=(3, 32, 32), progress=False)
        >>> len(ex.layers(kind="attention"))  # one Softmax over keys per block, found in the ONNX export
        2
        >>> exp = ex.explain(tiny_images(), method="chefer", target=1)
        >>> exp.raw.shape, exp.heatmap.shape  # the 4 x 4 patch grid, the class token dropped
        ((2, 4, 4), (2, 32, 32))
    """

    needs = Needs.ATTENTION_GRADIENTS

    def compute(self, cap: Capture) -> np.ndarray:
        att = cap.attention
        n, t = cap.n, att.tokens
        r = np.broadcast_to(np.eye(t, dtype=np.float64), (n, t, t)).copy()
        for a, g in zip(att.maps, att.grads):
            cam = np.maximum(g.astype(np.float64) * a, 0).mean(axis=1)  # (N, T, T)
            r = r + cam @ r
        return att.patch_map(att.query_rows(r)).astype(np.float32)
