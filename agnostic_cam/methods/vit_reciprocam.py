"""ViT-ReciproCAM (Byun & Lee 2023): Recipro-CAM on a ViT's tokens, Gaussian neighbourhoods, class token kept."""
from __future__ import annotations

from agnostic_cam.errors import OptionError
from agnostic_cam.methods.base import register
from agnostic_cam.methods.reciprocam import MosaicMethod


@register("vit_reciprocam")
class ViTReciproCAM(MosaicMethod):
    """ViT-ReciproCAM: the target's probability when the token layer keeps one patch's neighbourhood.

    Paper: S.-Y. Byun and W. Lee, "ViT-ReciproCAM: Gradient and Attention-Free Visual Explanations
    for Vision Transformer", arXiv:2310.02588, 2023.

    With T the target layer's tokens (N, P + h*w, C) (P class / register tokens, then the h x w patch
    grid), G_ij the 3x3 Gaussian mask centred on patch (i, j) (1/4, 1/8, 1/16; cut at the border),
    g the tail of the model after the layer and k the target class:

        T_ij = [T_prefix, T_patches * G_ij]       (prefix tokens kept: ``cls_token=True``)
        cam[i, j] = softmax(g(T_ij))_k

    ``gaussian=False`` keeps patch (i, j) alone (OpenVINO XAI's ``use_gaussian=False``). Pick a layer
    inside the last blocks (e.g. ``blocks.10`` or ``blocks.11.norm1`` of a 12-block DeiT): the tail
    then mixes the kept tokens through attention. Works on CNN maps too (channel-wise masks).
    Forward-only (ONNX Runtime); embeddable in the ONNX graph (``Explainer.embed``).

    Args:
        gaussian (bool): 3x3 Gaussian neighbourhood instead of one patch. Default True.
        cls_token (bool): keep the class / register tokens in every masked copy. Default True.
        softmax (bool): softmax over the tail's outputs before reading the target. Default True.
        batch_size (int | None): masked copies per tail pass; None uses max(the explainer's, 64).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="vit_reciprocam")
        >>> exp.heatmap.shape
        (2, 32, 32)
    """

    def __init__(self, gaussian: bool = True, cls_token: bool = True, softmax: bool = True,
                 batch_size: int | None = None):
        super().__init__(softmax, batch_size)
        for name, v in (("gaussian", gaussian), ("cls_token", cls_token)):
            if not isinstance(v, bool):
                raise OptionError(f"{name} must be True or False; got {v!r}")
        self.gaussian, self.keep_prefix = gaussian, cls_token
