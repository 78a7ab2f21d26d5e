"""A PyTorch model whose ONNX export fails still runs every forward-only method (issue 18).

torchvision ``vgg11_bn`` at 64 px: the head's ``AdaptiveAvgPool2d(7)`` on a 2x2 map cannot be
exported (the legacy exporter raises ``SymbolicValueError`` after printing the TorchScript graph).
The fallback runs the forward passes on PyTorch. The reference computes each method's formula
(DESIGN.md) directly with eager PyTorch forward passes (hooks on the model, no library engine):
maps must agree within 1e-5. Reduced for time: one image, target layer ``features.2`` (64 channels,
so Score-/Ablation-CAM make 64 passes each), 10 classes.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from agnostic_cam.core.imaging import cam_to_heatmap

LAYER = "features.2"
BATCH = 32


@pytest.fixture(scope="module")
def vgg(torch):
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.vgg11_bn(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)


def eager_reference(torch, model, x: np.ndarray, target: int) -> dict[str, np.ndarray]:
    """Score-CAM, Ablation-CAM and Eigen-CAM heatmaps of one image from plain PyTorch forward passes."""
    layer = dict(model.named_modules())[LAYER]
    xt = torch.from_numpy(x)
    store = []
    with torch.no_grad():
        h = layer.register_forward_hook(lambda m, i, o: store.append(o.clone()))
        try:
            y = model(xt)[0, target].double()
        finally:
            h.remove()
        acts = store[-1]  # (1, C, h, w)
        c = acts.shape[1]
        # Score-CAM: bilinear (align_corners) upsampling, per-channel min-max, masked inputs
        up = torch.nn.functional.interpolate(acts, size=x.shape[2:], mode="bilinear", align_corners=True)
        lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
        masks = (up - lo) / (hi - lo + 1e-8)
        flat = acts.flatten(2)
        masks[flat.amax(2) == flat.amin(2)] = 0  # constant channels: exact zero mask
        s = torch.cat([model(xt * masks[0, k:k + BATCH, None]) for k in range(0, c, BATCH)])[:, target]
        w_score = torch.softmax(s.double(), 0).float()[None]
        # Ablation-CAM: row j of a batch has channel j of A zeroed by a hook, full model; batches of
        # BATCH rows as the explainer is told to use (float32 GEMMs round per batch composition)
        yk = []
        for k0 in range(0, c, BATCH):
            chans = range(k0, min(k0 + BATCH, c))

            def zero(m, i, o, chans=chans):  # the image's activation A with channel k set to zero
                o = acts.repeat(len(chans), 1, 1, 1)
                for j, k in enumerate(chans):
                    o[j, k] = 0
                return o
            h = layer.register_forward_hook(zero)
            try:
                yk.append(model(xt.repeat(len(chans), 1, 1, 1))[:, target].double())
            finally:
                h.remove()
        yk = torch.cat(yk)
        w_abl = ((y - yk) / y).float()[None]
    a = acts.numpy()
    size = x.shape[2:]
    return {"scorecam": cam_to_heatmap(np.einsum("nc,nchw->nhw", w_score.numpy(), a), size),
            "ablationcam": cam_to_heatmap(np.einsum("nc,nchw->nhw", w_abl.numpy(), a), size),
            "eigencam": a}  # activations: compared by an independent SVD (tests/independent.py)


def test_forward_methods_fall_back_with_one_warning_and_clean_stdout(torch, vgg, image, capfd):
    from agnostic_cam import Explainer
    from agnostic_cam.engine.eager import EagerEngine, ExportFallbackWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = Explainer.from_torch(vgg, LAYER, input_shape=(3, 64, 64), batch_size=BATCH)  # checks export now
        got = {m: ex.explain(image, m, target=3) for m in ("scorecam", "ablationcam", "eigencam")}
        with pytest.raises(ValueError, match="global-average-pool"):
            ex.explain(image, "cam")  # VGG has no GAP head: the same clear error as on ONNX Runtime
    fallback = [w for w in caught if issubclass(w.category, ExportFallbackWarning)]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    msg = str(fallback[0].message)
    assert "\n" not in msg and "SymbolicValueError" in msg and "PyTorch forward passes" in msg
    assert isinstance(ex.adapter.engine((3, 64, 64)), EagerEngine)
    out = capfd.readouterr()
    assert out.out == "", out.out[:500]  # no TorchScript graph dump
    assert "graph(" not in out.err
    assert all(p.requires_grad for p in vgg.parameters()) and not vgg.training  # model state untouched

    from independent import eigen_diff_up_to_sign

    ref = eager_reference(torch, vgg, image, 3)
    assert eigen_diff_up_to_sign(ref.pop("eigencam"), got["eigencam"].heatmap) <= 1e-5
    for m, want in ref.items():
        np.testing.assert_allclose(got[m].heatmap, want, atol=1e-5, err_msg=m)


def test_gradient_methods_need_no_export(vgg, image):
    from agnostic_cam import Explainer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = Explainer.from_torch(vgg, "features.2", input_shape=(3, 64, 64))
        e = ex.explain(image, "gradcam")
    assert e.heatmap.shape == (1, 64, 64) and np.isfinite(e.heatmap).all() and e.heatmap.max() > 0.999
