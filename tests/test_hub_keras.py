"""The automatic layer of Keras models: the same rule (agnostic_cam/adapters/auto_layer.py) as PyTorch and ONNX.

Keras applications built with weights=None (reduced for time: 64 px inputs, 3 classes): the pick is the
layer feeding the top's global pooling, the last stage, as PyTorch's pick on the torchvision twin of
each architecture is the module feeding its ``avgpool`` (both told independently here by which tensor
the pooling reads). Token models (tests/test_keras_vit.py's mini ViT, 32 px): mean-pooled, the final
norm (as timm's EVA02 gets ``norm``); read through its class token only, the last block's first norm
(as timm's ViT gets ``blocks.1.norm1``), whose Grad-CAM equals a GradientTape reference.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # torch before TensorFlow (see tests/onnx_helpers.py)
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from agnostic_cam import Explainer  # noqa: E402

import test_keras_vit as V  # noqa: E402

WHY = "picked automatically: the last main-path feature map before the head"
# Keras application -> its torchvision twin (None: torchvision has none at this size)
APPS = {"ResNet50": "resnet50", "MobileNetV3Small": "mobilenet_v3_small", "EfficientNetB0": "efficientnet_b0",
        "ConvNeXtTiny": "convnext_tiny"}


def described(ex) -> str:
    """The adapter's lines of ex.describe() (which layer and why) without its method list, which exports the model."""
    return "\n".join(ex.adapter.describe_lines())


def feeding(model, pool_type):
    """Names of the layers whose output the model's last ``pool_type`` layer reads."""
    pool = [ly for ly in model.layers if isinstance(ly, pool_type)][-1]
    return [ly.name for ly in model.layers if ly.output is pool.input]


def torch_feeding_avgpool(net, side):
    """The torchvision module names whose output ``net.avgpool`` reads (one forward pass with hooks)."""
    seen, outs = [], {}
    hooks = [net.avgpool.register_forward_pre_hook(lambda m, a: seen.append(a[0]))]
    hooks += [m.register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o)) for n, m in net.named_modules() if n]
    with torch.no_grad():
        net(torch.zeros(1, 3, side, side))
    for h in hooks:
        h.remove()
    return {n for n, o in outs.items() if o is seen[0]}


@pytest.mark.parametrize("app", list(APPS))
def test_keras_application_picks_the_last_stage_like_its_torch_twin(app):
    import torchvision

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, app)(weights=None, input_shape=(64, 64, 3), classes=3)
    ex = Explainer.from_keras(model, progress=False)
    if app == "ConvNeXtTiny":  # its blocks end in a residual `x + y` op, not a layer: no target_layer can name it,
        assert ex.layer == "convnext_tiny_stage_3_block_2_identity"  # so the last block's branch is the last layer
    else:
        assert ex.layer in feeding(model, keras.layers.GlobalAveragePooling2D)
    assert str(ex.adapter.layer_layout) == "NHWC" and WHY in described(ex)
    torch.manual_seed(0)
    net = getattr(torchvision.models, APPS[app])(weights=None).eval()
    twin = Explainer.from_torch(net, input_shape=(3, 64, 64), progress=False)
    assert twin.layer in torch_feeding_avgpool(net, 64)  # the same place in the same architecture
    assert WHY in described(twin)


def class_token_vit(vit):
    """The mini ViT read through its class token only (the head sees token 0 of the final norm)."""
    tok = keras.layers.Lambda(lambda t: t[:, 0], name="class_token")(vit.get_layer("final_ln").output)
    return keras.Model(vit.inputs, keras.layers.Dense(V.CLASSES, name="cls_head")(tok))


@pytest.mark.parametrize("pooling, expected", [("mean", "final_ln"), ("class_token", "block1_ln1")])
def test_keras_vit_picks_like_the_torch_rule(pooling, expected):
    vit = V.mini_vit()
    model = vit if pooling == "mean" else class_token_vit(vit)
    ex = Explainer.from_keras(model, progress=False)
    assert ex.layer == expected
    assert str(ex.adapter.layer_layout) == f"tokens(prefix=1, grid={V.GRID}x{V.GRID})"
    assert f"layer {expected!r} read as tokens(prefix=1, grid={V.GRID}x{V.GRID}): {WHY}" in described(ex)
    x = np.random.default_rng(0).normal(size=(2, V.SIZE, V.SIZE, 3)).astype(np.float32)
    a, g, *_ = V.tape_reference(model, x, expected)
    V.check(ex, x, "gradcam", np.einsum("nc,nchw->nhw", g.mean(axis=(2, 3)), a))
