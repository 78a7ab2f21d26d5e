"""Video Swin (torchvision ``swin3d_t``, random seeded weights) at its channels-last stage output: the
(t, h, w) grid is detected (NDHWC) and the CAM family equals pytorch-grad-cam 1.5.7 with the matching
``reshape_transform`` (``t.permute(0, 4, 1, 2, 3)``), compared at the layer's resolution (see
tests/test_video_r3d.py for why: pytorch-grad-cam resizes volumes with a cubic spline).

Reduced input (stated): one clip of 3 x 8 x 64 x 64 (swin3d_t is trained on 3 x 16 x 224 x 224), so ``norm``
is (1, 4, 2, 2, 768). Ablation-CAM is checked against its formula through the model's own head (768 tail
passes); Score-CAM is not run here (768 full forward passes of swin3d_t would take minutes on CPU; its
volume masks are checked on r3d_18 and across frameworks in tests/test_volumes.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pgc = pytest.importorskip("pytorch_grad_cam")
torchvision = pytest.importorskip("torchvision")

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.core.layout import LayerLayout  # noqa: E402

# the layer's channels-last view is exported to ONNX (Ablation-CAM's tail runs on ONNX Runtime, no fallback)
pytestmark = pytest.mark.filterwarnings("error::agnostic_cam.engine.eager.ExportFallbackWarning")

PGC = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM, "hirescam": pgc.HiResCAM,
       "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM}


def to_ncdhw(t):
    return t.permute(0, 4, 1, 2, 3)


@pytest.fixture(scope="module")
def setup():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.video.swin3d_t(weights=None, num_classes=10).eval()
    x = torch.rand(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1)).numpy()
    return model, x, Explainer.from_torch(model, "norm", progress=False)


@pytest.mark.parametrize("name", list(PGC))
def test_swin3d_cams_equal_pytorch_grad_cam(setup, name):
    model, x, ex = setup
    exp = ex.explain(x, name, target=2)
    assert ex.adapter.layer_layout == LayerLayout("NDHWC")  # detected: LayerNorm over the last axis
    assert exp.raw.shape == (1, 4, 2, 2) and exp.heatmap.shape == (1, 8, 64, 64) and not exp.degenerate.any()
    with PGC[name](model, [model.norm], reshape_transform=to_ncdhw) as cam:
        targets = [ClassifierOutputTarget(2)]
        xt = torch.from_numpy(x)
        cam(xt, targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy() if cam.activations_and_grads.gradients else None
        raw = cam.get_cam_image(xt, model.norm, targets, acts, grads, False)
    if name == "eigencam":  # the principal direction's sign is arbitrary
        raw = raw * np.sign((raw * exp.raw).sum())
    scale = np.abs(raw).max()
    np.testing.assert_allclose(exp.raw / scale, raw / scale, atol=1e-4)


def test_swin3d_ablationcam_equals_score_drops(setup):
    model, x, ex = setup
    exp = ex.explain(x, "ablationcam", target=0)
    assert not exp.degenerate.any()
    store = []
    h = model.norm.register_forward_hook(lambda m, i, o: store.append(o))
    with torch.no_grad():
        try:
            model(torch.from_numpy(x))
        finally:
            h.remove()
        a = store[0]  # (1, t, h, w, C) channels-last: channel c is the last axis
        head = lambda t: model.head(model.avgpool(t.permute(0, 4, 1, 2, 3)).flatten(1))  # noqa: E731
        y = head(a)[0, 0].item()
        abl = a.repeat(768, 1, 1, 1, 1)
        abl[torch.arange(768), ..., torch.arange(768)] = 0
        w = (y - head(abl)[:, 0].numpy()) / y
    cam = np.einsum("c,dhwc->dhw", w, a[0].numpy())[None]
    np.testing.assert_allclose(exp.raw / np.abs(cam).max(), cam / np.abs(cam).max(), atol=1e-4)
