"""The README's claims that ``target_layers=[...]``, ``refinecam``, ``aug_smooth`` and ``eigen_smooth``
work on Keras and ONNX, checked against pytorch-grad-cam 1.5.7 on the PyTorch twin.

One network in three frameworks with the same weights: the demo CNN (``demo_net``, seeded random
weights and non-trivial batch-norm statistics, no training), its Keras 3 twin (``keras_demo_net`` +
``copy_torch_weights``, NHWC) and its ONNX export. Reduced for time: 32 px inputs (the demo's are
64 px), two images. pytorch-grad-cam runs on the PyTorch model with the same layers and targets; the
Keras and ONNX heatmaps must equal its heatmaps, and equal ours from PyTorch.

Bound: 1e-4 on heatmaps in [0, 1], as the PyTorch parity tests of the same options
(tests/test_parity_cam_family.py): the three frameworks run the same float32 convolutions (sums of
<= 288 products, relative rounding ~ 1e-6 of the map's scale) before the min-max normalisation, so
1e-4 is far above their rounding unless a map is nearly flat -- each test checks the option (or the
extra layer) moves the map by > 0.05, so none is; bilinear resizes of both sides use the same
formula (pytorch-grad-cam's cv2.resize is the reference).
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx_helpers import export_torch
from test_parity_cam_family import pgc_reference

from agnostic_cam import Explainer

SIZE, TARGETS = 32, [1, 3]  # 32 px (demo: 64 px): relu2 16x16, relu3 8x8
LAYERS = {"torch": ["features.relu2", "features.relu3"], "keras": ["relu2", "relu3"],
          "onnx": ["/features/relu2/Relu_output_0", "/features/relu3/Relu_output_0"]}


@pytest.fixture(scope="module")
def twins(torch):
    """(torch model, images NCHW, {framework: (explainer over both layers, explainer over relu3, NHWC?)})."""
    from agnostic_cam.demo.keras_model import copy_torch_weights, keras_demo_net
    from agnostic_cam.demo.torch_model import demo_net, numpy_weights

    torch.manual_seed(21)
    net = demo_net().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for i in (1, 2, 3):
            bn = getattr(net.features, f"bn{i}")
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    km = keras_demo_net(size=SIZE)
    copy_torch_weights(km, numpy_weights(net))
    proto = export_torch(net, SIZE)
    x = np.random.default_rng(8).uniform(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    build = {"torch": lambda layers: Explainer.from_torch(net, target_layers=layers, progress=False),
             "keras": lambda layers: Explainer.from_keras(km, target_layers=layers, progress=False),
             "onnx": lambda layers: Explainer.from_onnx(proto, target_layers=layers, progress=False)}
    exs = {fw: (build[fw](LAYERS[fw]), build[fw](LAYERS[fw][1:])) for fw in build}
    return net, x, exs


def inputs(fw, x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if fw == "keras" else x


CASES = {  # name: (our method, options, both layers?, pytorch-grad-cam class, call options, sign-free?)
    "target_layers": ("gradcam", {}, True, "GradCAM", {}, False),
    "target_layers_scorecam": ("scorecam", {}, True, "ScoreCAM", {}, False),
    "aug_smooth": ("gradcam", {"aug_smooth": True}, False, "GradCAM", {"aug_smooth": True}, False),
    "eigen_smooth": ("gradcam", {"eigen_smooth": True}, False, "GradCAM", {"eigen_smooth": True}, True),
}


@pytest.mark.parametrize("fw", ["keras", "onnx"])
@pytest.mark.parametrize("case", list(CASES))
def test_claim_holds_on_keras_and_onnx(twins, torch, fw, case, monkeypatch):
    method, opts, both, cls_name, call, sign_free = CASES[case]
    net, x, exs = twins
    named = dict(net.named_modules())
    layers = [named[n] for n in (LAYERS["torch"] if both else LAYERS["torch"][1:])]
    ref = pgc_reference(net, layers, torch.from_numpy(x), TARGETS, cls_name, call, sign_free, monkeypatch)
    pick = 0 if both else 1
    ours = exs[fw][pick].explain(inputs(fw, x), method, target=TARGETS, **opts)
    torch_ours = exs["torch"][pick].explain(x, method, target=TARGETS, **opts)
    assert ours.heatmap.shape == ref.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(ours.heatmap, ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.heatmap, torch_ours.heatmap, rtol=0, atol=1e-4)
    if both:  # the first layer really contributes: not the single-layer map
        single = exs[fw][1].explain(inputs(fw, x), method, target=TARGETS)
        assert np.abs(ours.heatmap - single.heatmap).max() > 0.05
    if opts:  # the option really changes the map
        plain = exs[fw][1].explain(inputs(fw, x), method, target=TARGETS)
        assert np.abs(ours.heatmap - plain.heatmap).max() > 0.05


@pytest.mark.parametrize("fw", ["keras", "onnx"])
def test_refinecam_on_keras_and_onnx(twins, torch, fw):
    """RefineCAM over relu2 and relu3 (Grad-CAM++ per layer, product, min-max) as pytorch-grad-cam's."""
    from pytorch_grad_cam import RefineCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, x, exs = twins
    named = dict(net.named_modules())
    ref = RefineCAM(net, [named[n] for n in LAYERS["torch"]])(torch.from_numpy(x),
                                                               [ClassifierOutputTarget(t) for t in TARGETS])
    ours = exs[fw][0].explain(inputs(fw, x), "refinecam", target=TARGETS)
    np.testing.assert_allclose(ours.heatmap, ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.heatmap, exs["torch"][0].explain(x, "refinecam", target=TARGETS).heatmap,
                               rtol=0, atol=1e-4)
