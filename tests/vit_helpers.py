"""Shared by the ViT / Swin tests."""
import torch


def randomise_norms(model, seed=0):
    """Random affine LayerNorm parameters and no all-zero head: at their init (weight 1, bias 0)
    every token's channels average to exactly 0, so channel-weighted CAMs with near-uniform weights
    (Score-CAM on an untrained net) become rounding noise; torchvision's ViT head starts at zero, so
    every score is 0 (Ablation-CAM divides by it). Trained ViTs have neither."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.Linear) and not m.weight.any():  # torchvision's ViT head starts at 0
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
    return model
