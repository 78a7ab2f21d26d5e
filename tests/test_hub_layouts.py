"""No documented ``layer_layout=`` gives a map from a misread tensor, for Keras and ONNX too.

The sibling of tests/test_hub_models.py's PyTorch sweep: on the layer each framework picks
automatically, every documented spelling ('NCHW', 'NHWC', 'tokens') is declared; each either raises a
typed error (which names the right reading) or gives exactly the map of the correct reading, and the
correct reading, declared, is taken. References are independent: pytorch-grad-cam's Grad-CAM on the
PyTorch model with the reshape written from the expected layout (for the ONNX exports), and Grad-CAM
written here from a GradientTape (Keras).

Reduced for time: ONNX exports of four hub families (a class-token ViT, a Swin read as tokens, a
channels-last Swin, a CNN; tiny configs, 64 px), tests/test_keras_vit.py's mini ViT (32 px) with its
token layers and its channels-last patch convolution; two images.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pgc = pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import hub_zoo as Z  # noqa: E402
from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.errors import AgnosticCamError  # noqa: E402
from test_hub_models import MATRIX, TOL, Selected, reshape_for  # noqa: E402

SPELLINGS = ("NCHW", "NHWC", "tokens")


def sweep(build_explainer, reference, x) -> list[str]:
    """The spellings taken on images ``x``; each taken one must give ``reference(classes)``'s map."""
    taken = []
    for declared in SPELLINGS:
        try:
            got = build_explainer(declared).explain(x, "gradcam")
        except AgnosticCamError:
            continue  # refused with a typed error: never a wrong map
        ref = reference([int(c) for c in got.targets])
        assert np.abs(got.heatmap - ref).max() <= TOL, f"layer_layout={declared!r} gave a map from a misread tensor"
        taken.append(declared)
    return taken


@pytest.mark.parametrize("build", [Z.hf_vit, Z.hf_swin, Z.timm_swin, Z.timm_resnet], ids=lambda b: b.__name__)
def test_onnx_declared_layouts(build, tmp_path):
    expected_layer, expected_layout, key = MATRIX[build]
    model, side = build()
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Selected(model, key).eval(), (torch.zeros(1, 3, side, side),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}})
    x = np.random.default_rng(0).normal(size=(2, 3, side, side)).astype(np.float32)
    tensor = Explainer.from_onnx(path).layer  # the automatic pick: the same tensor as PyTorch's (test_hub_models)
    layer = dict(model.named_modules())[expected_layer]

    def reference(classes):
        with pgc.GradCAM(model=Selected(model, key), target_layers=[layer],
                         reshape_transform=reshape_for(expected_layout)) as cam:
            return cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(c) for c in classes])

    taken = sweep(lambda declared: Explainer.from_onnx(path, target_layer=tensor, layer_layout=declared), reference, x)
    assert expected_layout.split("(")[0] in taken


@pytest.mark.parametrize("layer, layout", [("final_ln", "tokens"), ("block1_ln1", "tokens"), ("patch_conv", "NHWC")])
def test_keras_declared_layouts(layer, layout):
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    import test_keras_vit as V

    model = V.mini_vit()
    x = np.random.default_rng(0).normal(size=(2, V.SIZE, V.SIZE, 3)).astype(np.float32)
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])

    def reference(classes):
        with tf.GradientTape() as tape:
            act, out = probe(tf.constant(x))
            score = tf.gather(out, classes, axis=1, batch_dims=1)
        a, g = np.asarray(act, np.float64), np.asarray(tape.gradient(score, act), np.float64)
        if a.ndim == 3:  # tokens: class token dropped, patch grid restored, as (N, h, w, C)
            a, g = (t[:, 1:].reshape(len(t), V.GRID, V.GRID, -1) for t in (a, g))
        return V.heatmap(np.einsum("nc,nhwc->nhw", g.mean(axis=(1, 2)), a))

    taken = sweep(lambda declared: Explainer.from_keras(model, layer, layer_layout=declared, progress=False),
                  reference, x)
    assert layout in taken
