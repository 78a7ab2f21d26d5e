"""The CAM family on torchvision's ``r3d_18`` (random seeded weights, weights=None) at ``layer4``, against
pytorch-grad-cam 1.5.7's 3-D code and, where that has none, formulas written here.

Reduced input (stated): clips of 3 x 16 x 32 x 32 (r3d_18 is trained on 3 x 16 x 112 x 112), so layer4 is
(512, 2, 2, 2): time and space both keep more than one position. Score-CAM scores one masked clip per
channel (512 here), so its formula is checked on a small 3-D CNN (16 channels at the layer) instead, on one
3 x 8 x 16 x 32 clip (pytorch-grad-cam has no 3-D Score-CAM).

pytorch-grad-cam upsamples 3-D maps with ``scipy.ndimage.zoom`` (cubic spline) where 2-D maps get OpenCV's
bilinear resize; we resize volumes trilinearly (the 3-D form of the 2-D rule). So the comparison is on the
maps at the layer's resolution (its ``get_cam_image`` on its own captured activations and gradients, the
step before its resize), and our trilinear heatmap is checked against ``torch.nn.functional.interpolate``.
pytorch-grad-cam's ScoreCAM (``UpsamplingBilinear2d``) and AblationCAM (4-D ``repeat``) fail on 5-D
activations (asserted below): those two are checked against the paper's formulas written here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pgc = pytest.importorskip("pytorch_grad_cam")
torchvision = pytest.importorskip("torchvision")

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from agnostic_cam import Explainer  # noqa: E402

PGC = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM, "hirescam": pgc.HiResCAM,
       "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM}


def r3d():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.video.r3d_18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def setup():
    model = r3d()
    x = torch.rand(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(1)).numpy()
    ex = Explainer.from_torch(model, "layer4", progress=False)
    return model, x, ex


def pgc_raw(model, x, name, classes):
    """pytorch-grad-cam's map at the layer's resolution: its own get_cam_image on what it captured."""
    with PGC[name](model, [model.layer4]) as cam:
        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        xt = torch.from_numpy(x)
        heat = cam(xt, targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy() if cam.activations_and_grads.gradients else None
        raw = cam.get_cam_image(xt, model.layer4, targets, acts, grads, False)
    return raw, heat


@pytest.mark.parametrize("name", list(PGC))
def test_r3d18_cams_equal_pytorch_grad_cam(setup, name):
    model, x, ex = setup
    exp = ex.explain(x, name, target=[2, 7])
    assert exp.raw.shape == (2, 2, 2, 2) and exp.heatmap.shape == (2, 16, 32, 32) and not exp.degenerate.any()
    raw, heat = pgc_raw(model, x, name, [2, 7])
    assert heat.shape == exp.heatmap.shape  # its (cubic-spline) resize to the clip's own size
    if name == "eigencam":  # the principal direction's sign is arbitrary: compare up to sign
        raw = raw * np.sign((raw * exp.raw).reshape(2, -1).sum(1))[:, None, None, None]
    scale = np.abs(raw).reshape(2, -1).max(1)[:, None, None, None]
    np.testing.assert_allclose(exp.raw / scale, raw / scale, atol=1e-4)
    # our heatmap: relu -> min-max -> trilinear (torch's interpolate) -> relu -> min-max, per clip
    r = np.maximum(raw, 0)
    r = (r - r.min(axis=(1, 2, 3), keepdims=True)) / (np.ptp(r, axis=(1, 2, 3), keepdims=True) + 1e-7)
    up = np.maximum(F.interpolate(torch.from_numpy(r)[:, None], size=(16, 32, 32), mode="trilinear")[:, 0].numpy(), 0)
    up = (up - up.min(axis=(1, 2, 3), keepdims=True)) / (np.ptp(up, axis=(1, 2, 3), keepdims=True) + 1e-7)
    np.testing.assert_allclose(exp.heatmap, up, atol=1e-4)


def test_r3d18_ablationcam_equals_score_drops(setup):
    model, x, ex = setup
    exp = ex.explain(x, "ablationcam", target=[2, 7])
    with torch.no_grad():  # the formula through r3d_18's own head: y_c with channel c of layer4 set to 0
        feats = model.stem(torch.from_numpy(x))
        for block in (model.layer1, model.layer2, model.layer3, model.layer4):
            feats = block(feats)
        a = feats.numpy()
        head = lambda t: model.fc(model.avgpool(t).flatten(1))  # noqa: E731
        cam = []
        for i, c in enumerate((2, 7)):
            y = head(feats[i:i + 1])[0, c].item()
            abl = feats[i:i + 1].repeat(512, 1, 1, 1, 1)
            abl[torch.arange(512), torch.arange(512)] = 0
            w = (y - head(abl)[:, c].numpy()) / y
            cam.append(np.einsum("c,cdhw->dhw", w, a[i]))
    cam = np.stack(cam)
    np.testing.assert_allclose(exp.raw / np.abs(cam).max(), cam / np.abs(cam).max(), atol=1e-4)
    fresh = r3d()  # pytorch-grad-cam 1.5.7 has no 3-D Ablation-CAM (and leaves its AblationLayer in the model)
    with pytest.raises(RuntimeError, match="repeat"):
        with pgc.AblationCAM(fresh, [fresh.layer4]) as cam3d:
            cam3d(torch.from_numpy(x[:1]), [ClassifierOutputTarget(3)])


def small_3d_cnn():
    """A small 3-D CNN (16 channels at the target layer): Score-CAM's cost is one forward pass per channel,
    and r3d_18's 512 channels made this the slowest test of the suite (25 s). The 3-D path Score-CAM
    takes (trilinear masks of a 5-D layer, batched masked clips) does not depend on the channel count;
    nor on the network around the layer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return torch.nn.Sequential(
            torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool3d(2),
            torch.nn.Conv3d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool3d(2),
            torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(16, 6)).eval()


def test_scorecam_3d_equals_formula():
    model = small_3d_cnn()
    layer = model[4]  # the ReLU after the second convolution: (16, 4, 8, 16) on a 3 x 8 x 16 x 32 clip
    ex = Explainer.from_torch(model, layer, progress=False)
    x = torch.rand(1, 3, 8, 16, 32, generator=torch.Generator().manual_seed(2)).numpy()
    exp = ex.explain(x, "scorecam", target=5, batch_size=8)
    with torch.no_grad():  # Score-CAM's eq. 3-6: trilinear (align_corners) masks, min-max, softmax of scores
        store = []
        h = layer.register_forward_hook(lambda m, i, o: store.append(o.clone()))
        try:
            model(torch.from_numpy(x))
        finally:
            h.remove()
        a = store[0]
        c = a.shape[1]
        up = F.interpolate(a, size=(8, 16, 32), mode="trilinear", align_corners=True)[0]
        lo, hi = up.flatten(1).min(1)[0], up.flatten(1).max(1)[0]
        masks = (up - lo[:, None, None, None]) / (hi - lo + 1e-8)[:, None, None, None]
        scores = model(torch.from_numpy(x) * masks[:, None])[:, 5]
        w = torch.softmax(scores.double(), 0).numpy()
        cam = np.einsum("c,cdhw->dhw", w, a[0].numpy())[None]
    assert exp.raw.shape == (1, 4, 8, 16) and c == 16
    np.testing.assert_allclose(exp.raw / np.abs(cam).max(), cam / np.abs(cam).max(), atol=1e-4)


def test_pytorch_grad_cam_has_no_3d_scorecam():
    """pytorch-grad-cam 1.5.7's ScoreCAM upsamples in 2-D only: it fails on r3d_18's 5-D layer4, where ours
    runs the formula checked above (the 3-D path does not depend on the network)."""
    x = torch.rand(1, 3, 2, 32, 32, generator=torch.Generator().manual_seed(2))
    fresh = r3d()
    with pytest.raises((ValueError, RuntimeError, NotImplementedError)):
        with pgc.ScoreCAM(fresh, [fresh.layer4]) as cam3d:
            cam3d(x, [ClassifierOutputTarget(5)])
