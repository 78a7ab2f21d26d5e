"""ViT-ReciproCAM (Byun & Lee 2023): Recipro-CAM on a ViT block's tokens, Gaussian neighbourhoods, class token kept."""
from __future__ import annotations

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import register
from agnostic_cam.methods.reciprocam import MosaicMethod


@register("vit_reciprocam")
class ViTReciproCAM(MosaicMethod):
    """ViT-ReciproCAM: the target's probability when a transformer block keeps one patch's neighbourhood.

    Paper: S.-Y. Byun and W. Lee, "ViT-ReciproCAM: Gradient and Attention-Free Visual Explanations
    for Vision Transformer", arXiv:2310.02588, 2023.

    The target layer is a pre-norm block's input X (N, P + h*w, C) (P class / register tokens, then the
    h x w patch grid; e.g. ``blocks.10``, the input of the last of 12 blocks) or that block's first
    LayerNorm (``blocks.11.norm1``). With G_ij the 3x3 Gaussian mask centred on patch (i, j) (1/4, 1/8,
    1/16; cut at the border), prefix tokens kept (``cls_token=True``), the block
    B(x, n) = x' + MLP(LN2(x')), x' = x + Attn(n), g the network after the block and k the target class:

        X_ij = [X_prefix, X_patches * G_ij],   N_ij = [LN1(X)_prefix, LN1(X)_patches * G_ij]
        cam[i, j] = softmax(g(B(X_ij, N_ij)))_k

    Both the residual stream and the norm's output are masked (as the paper and OpenVINO XAI do):
    masking before the LayerNorm would turn a zeroed token into the norm's bias; a token layer that is
    neither gets a ModelError naming the fix. ``layer_only=True`` masks the layer's tensor alone and
    lets the network recompute the rest from it (any layer); that is also what a spatial map (N, C, h, w)
    or (N, h, w, C) gets by default, where there is no LayerNorm to mask. ``gaussian=False`` keeps patch (i, j) alone (OpenVINO XAI's ``use_gaussian=False``).
    Forward-only (ONNX Runtime); embeddable in the ONNX graph (``Explainer.embed``).

    Args:
        gaussian (bool): 3x3 Gaussian neighbourhood instead of one patch. Default True.
        cls_token (bool): keep the class / register tokens in every masked copy. Default True.
        layer_only (bool | None): True: mask the layer's tensor only; False: the block (token layers);
            None (default): the block for token layers, the layer's tensor for spatial maps.
        softmax (bool): softmax over the tail's outputs before reading the target. Default True.
        batch_size (int | None): masked copies per tail pass; None uses max(the explainer's, 64).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_images, tiny_vit
        >>> ex = Explainer.from_torch(tiny_vit(), "blocks.0", input_shape=(3, 32, 32), progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="vit_reciprocam")  # masks blocks.1's input and its norm1 output
        >>> exp.raw.shape, exp.heatmap.shape
        ((2, 4, 4), (2, 32, 32))
    """

    def __init__(self, gaussian: bool = True, cls_token: bool = True, layer_only: bool | None = None,
                 softmax: bool = True, batch_size: int | None = None):
        super().__init__(softmax, batch_size)
        for name, v in (("gaussian", gaussian), ("cls_token", cls_token), ("layer_only", layer_only)):
            if not isinstance(v, bool) and not (name == "layer_only" and v is None):
                raise OptionError(f"{name} must be True or False{' or None' if name == 'layer_only' else ''}; got {v!r}")
        self.gaussian, self.keep_prefix = gaussian, cls_token
        self.block = None if layer_only is None else not layer_only
