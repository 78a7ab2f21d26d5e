"""Small random-weight models as users load them from Hugging Face ``transformers``, timm and open_clip.

Nothing is downloaded: every model is built from a tiny config (hidden 16-64, 1-2 layers per stage,
2 heads) with seeded random weights. Used by tests/test_hub_models.py and the docs page's examples.
Each builder returns (model, side): the model in eval mode and the input side in pixels (64-98).
"""
from __future__ import annotations

import torch

from vit_helpers import randomise_norms


def _seeded(fn):
    def build():
        torch.manual_seed(0)
        model, side = fn()
        return randomise_norms(model).eval(), side  # LayerNorms at their init make channel sums 0
    build.__name__ = fn.__name__
    return build


def lively(model):
    """He-initialised convolutions and linear layers, fresh batch norms: some configs' own small-std init makes a deep random
    network's output vanish (all-zero maps explain nothing)."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_parameters()
    return model


# -- Hugging Face transformers -----------------------------------------------------------------------
VIT_KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=5)


@_seeded
def hf_vit():
    from transformers import ViTConfig, ViTForImageClassification
    return ViTForImageClassification(ViTConfig(image_size=64, patch_size=16, **VIT_KW)), 64


@_seeded
def hf_deit():
    from transformers import DeiTConfig, DeiTForImageClassification
    return DeiTForImageClassification(DeiTConfig(image_size=64, patch_size=16, **VIT_KW)), 64


@_seeded
def hf_beit():
    from transformers import BeitConfig, BeitForImageClassification
    return BeitForImageClassification(BeitConfig(image_size=64, patch_size=16, use_mean_pooling=False,
                                                 **VIT_KW)), 64


@_seeded
def hf_dinov2():
    from transformers import Dinov2Config, Dinov2ForImageClassification
    return Dinov2ForImageClassification(Dinov2Config(image_size=70, patch_size=14, **VIT_KW)), 70


@_seeded
def hf_dinov2_registers():
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification
    cfg = Dinov2WithRegistersConfig(image_size=70, patch_size=14, num_register_tokens=4, **VIT_KW)
    return Dinov2WithRegistersForImageClassification(cfg), 70


@_seeded
def hf_swin():
    from transformers import SwinConfig, SwinForImageClassification
    cfg = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 2], num_heads=[1, 2, 2],
                     window_size=4, num_labels=5)
    return SwinForImageClassification(cfg), 64


@_seeded
def hf_convnext():
    from transformers import ConvNextConfig, ConvNextForImageClassification
    cfg = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=5)
    return ConvNextForImageClassification(cfg), 64


@_seeded
def hf_resnet():
    from transformers import ResNetConfig, ResNetForImageClassification
    cfg = ResNetConfig(embedding_size=16, hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1], layer_type="basic",
                       num_labels=5)
    return ResNetForImageClassification(cfg), 64


@_seeded
def hf_efficientnet():
    from transformers import EfficientNetConfig, EfficientNetForImageClassification
    cfg = EfficientNetConfig(image_size=64, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320,
                             num_labels=5)
    return lively(EfficientNetForImageClassification(cfg)), 64


@_seeded
def hf_mobilevit():
    from transformers import MobileViTConfig, MobileViTForImageClassification
    cfg = MobileViTConfig(image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 48],
                          num_attention_heads=2, num_labels=5)
    return lively(MobileViTForImageClassification(cfg)), 64


@_seeded
def hf_segformer():
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                          patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                          decoder_hidden_size=32, num_labels=4)
    return lively(SegformerForSemanticSegmentation(cfg)), 64


@_seeded
def hf_clip_vision():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    cfg = CLIPVisionConfig(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, projection_dim=16)
    return CLIPVisionModelWithProjection(cfg), 64


# -- timm --------------------------------------------------------------------------------------------
def _timm(name, side, **kw):
    import timm
    return timm.create_model(name, pretrained=False, num_classes=5, **kw), side


TIMM_VIT = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)
timm_vit = _seeded(lambda: _timm("vit_tiny_patch16_224", 64, **TIMM_VIT))
timm_deit = _seeded(lambda: _timm("deit_tiny_distilled_patch16_224", 64, **TIMM_VIT))
timm_eva02 = _seeded(lambda: _timm("eva02_tiny_patch14_224", 98, img_size=98, embed_dim=32, depth=2, num_heads=2))
timm_swin = _seeded(lambda: _timm("swin_tiny_patch4_window7_224", 64, img_size=64, embed_dim=16, depths=(1, 1, 2),
                                  num_heads=(1, 2, 2), window_size=4))
timm_convnext = _seeded(lambda: _timm("convnext_atto", 64, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)))
timm_efficientvit = _seeded(lambda: _timm("efficientvit_b0", 64, widths=(8, 16, 16, 32, 32), depths=(1, 1, 1, 1, 1),
                                          head_dim=8, head_widths=(64, 80)))
timm_fastvit = _seeded(lambda: _timm("fastvit_t8", 64, layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128)))
timm_resnet = _seeded(lambda: _timm("resnet18", 64, channels=(16, 32, 64, 128), stem_width=16))
timm_mobilenetv4 = _seeded(lambda: _timm("mobilenetv4_conv_small_035", 64))


def _timm_regnet():
    from timm.models.regnet import RegNet, RegNetCfg  # the smallest registered RegNet has 2.3M weights
    return RegNet(RegNetCfg(w0=16, wa=12.0, wm=2.0, depth=8, group_size=8), num_classes=5), 64


timm_regnet = _seeded(_timm_regnet)

for _n in ("timm_vit", "timm_deit", "timm_eva02", "timm_swin", "timm_convnext", "timm_efficientvit", "timm_fastvit",
           "timm_resnet", "timm_regnet", "timm_mobilenetv4"):
    globals()[_n].__name__ = _n


# -- open_clip ---------------------------------------------------------------------------------------
def _open_clip(vision_cfg, side):
    from open_clip.model import CLIP
    text = dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1)
    return CLIP(embed_dim=16, vision_cfg=vision_cfg, text_cfg=text, output_dict=True), side


open_clip_vit = _seeded(lambda: _open_clip(dict(image_size=64, patch_size=16, width=32, layers=2, head_width=16), 64))
open_clip_resnet = _seeded(lambda: _open_clip(dict(image_size=64, layers=(1, 1, 1, 1), width=16, head_width=16), 64))
open_clip_vit.__name__, open_clip_resnet.__name__ = "open_clip_vit", "open_clip_resnet"

ALL = [hf_vit, hf_deit, hf_beit, hf_dinov2, hf_dinov2_registers, hf_swin, hf_convnext, hf_resnet, hf_efficientnet,
       hf_mobilevit, hf_segformer, hf_clip_vision, timm_vit, timm_deit, timm_eva02, timm_swin, timm_convnext,
       timm_efficientvit, timm_fastvit, timm_resnet, timm_regnet, timm_mobilenetv4, open_clip_vit, open_clip_resnet]
