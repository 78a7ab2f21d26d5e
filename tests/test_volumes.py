"""Volumes and clips (N, C, D, H, W): layouts, trilinear post-processing and the CAM family on D x H x W.

References are independent: explicit NumPy transposes, ``torch.nn.functional.interpolate`` (trilinear),
pytorch-grad-cam 1.5.7's own 3-D code (``get_cam_image`` on its captured activations / gradients), and
formulas written here (Score-CAM's masks and softmax, Ablation-CAM's score drops through r3d_18's own head).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agnostic_cam import Explainer
from agnostic_cam.core import layout as L
from agnostic_cam.core import layout_detect as LD
from agnostic_cam.core.imaging import cam_to_heatmap, minmax, resize_trilinear
from agnostic_cam.demo.volume import VOLUME_LAYER, keras_cnn3d, tiny_cnn3d, tiny_volumes
from agnostic_cam.errors import LayoutError, OptionError

CAMS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam", "ablationcam"]


# -- layouts -------------------------------------------------------------------------------------
def test_volume_layer_layouts_match_explicit_transposes():
    rng = np.random.default_rng(0)
    a = rng.random((2, 5, 3, 4, 6)).astype(np.float32)  # (N, C, d, h, w)
    cl = np.ascontiguousarray(a.transpose(0, 2, 3, 4, 1))  # (N, d, h, w, C)
    assert L.LayerLayout("NDHWC").to_chw(cl).tobytes() == a.tobytes()
    assert L.LayerLayout("NDHWC").from_chw(a).tobytes() == cl.tobytes()
    assert L.LayerLayout("NCDHW").to_chw(a) is a
    assert L.LayerLayout("NDHWC").chw_shape(cl.shape) == a.shape
    tok = np.concatenate([rng.random((2, 1, 5)), cl.reshape(2, 3 * 4 * 6, 5)], axis=1).astype(np.float32)
    lay = L.LayerLayout("tokens", prefix=1, grid=(3, 4, 6))
    assert lay.to_chw(tok).tobytes() == a.tobytes() and lay.chw_shape(tok.shape) == a.shape
    assert L.LayerLayout("tokens", grid=(3, 4, 6)).from_chw(a).tobytes() == cl.reshape(2, -1, 5).tobytes()
    assert L.as_layer_layout("ndhwc") == L.LayerLayout("NDHWC") and L.LayerLayout("NDHWC").channel_axis == -1
    # the image helpers take any rank
    assert L.spatial_size((2, 3, 8, 32, 32), "NCHW") == (8, 32, 32)
    assert L.spatial_size((2, 8, 32, 32, 3), "NHWC") == (8, 32, 32)
    assert L.channels((2, 8, 32, 32, 3), "NHWC") == 3
    assert L.to_chw(cl, "NHWC").tobytes() == a.tobytes()


def test_volume_layouts_detected_from_strides_or_refused():
    # r3d_18's layer4 for 8 x 64 x 64 clips: time strided by 8, space by 16
    assert LD.detect_layer_layout((1, 512, 1, 4, 4), (8, 64, 64)) == L.LayerLayout("NCDHW")
    assert LD.detect_layer_layout((1, 4, 8, 8, 96), (8, 64, 64)) == L.LayerLayout("NDHWC")  # Video Swin stage
    assert LD.detect_layer_layout((1, 8, 4, 16, 16), (8, 32, 32), "channels_first") == L.LayerLayout("NCDHW")
    with pytest.raises(LayoutError, match="NCDHW' or 'NDHWC"):  # both readings fit: never guessed
        LD.detect_layer_layout((1, 4, 4, 4, 4), (8, 16, 16))
    with pytest.raises(LayoutError, match="rank-5"):
        LD.detect_layer_layout((1, 4, 4, 4, 4), (16, 16))
    with pytest.raises(LayoutError, match="rank-4"):  # a declared 2-D layout for a 3-D tensor
        LD.resolve_layer_layout(L.LayerLayout("NCHW"), (1, 512, 1, 4, 4), (8, 64, 64))
    # tubelet token grids: prefix + t*h*w, settled by the 3-D patch embedding's grid
    splits = L.grid_candidates(1 + 4 * 8 * 8, (8, 32, 32))
    assert (1, 4, 8, 8) in splits
    lay = LD.detect_layer_layout((1, 1 + 4 * 8 * 8, 96), (8, 32, 32), "channels_last", grids=[(4, 8, 8)])
    assert lay == L.LayerLayout("tokens", prefix=1, grid=(4, 8, 8))


def test_trilinear_resize_and_volume_normalisation_match_torch():
    rng = np.random.default_rng(1)
    v = rng.random((3, 2, 3, 5)).astype(np.float32)
    for ac in (False, True):
        ref = F.interpolate(torch.from_numpy(v)[:, None], size=(7, 9, 4), mode="trilinear", align_corners=ac)[:, 0]
        np.testing.assert_allclose(resize_trilinear(v, (7, 9, 4), align_corners=ac), ref.numpy(), atol=1e-6)
    m = minmax(v, ndim=3)  # one scale per volume, not per slice
    assert np.allclose(m.reshape(3, -1).min(1), 0) and np.allclose(m.reshape(3, -1).max(1), 1, atol=1e-6)
    heat = cam_to_heatmap(v - 0.3, (6, 6, 10))
    r = np.maximum(v - 0.3, 0)
    r = (r - r.min(axis=(1, 2, 3), keepdims=True)) / (r.max(axis=(1, 2, 3), keepdims=True) - r.min(axis=(1, 2, 3), keepdims=True) + 1e-7)
    up = np.maximum(F.interpolate(torch.from_numpy(r)[:, None], size=(6, 6, 10), mode="trilinear")[:, 0].numpy(), 0)
    lo, hi = up.min(axis=(1, 2, 3), keepdims=True), up.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(heat, (up - lo) / (hi - lo + 1e-7), atol=1e-6)


# -- frameworks on the same 3-D weights -------------------------------------------------------------
@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The tiny 3-D CNN in PyTorch, its Keras Conv3D twin (copied weights) and its ONNX export."""
    from agnostic_cam import compat

    net = tiny_cnn3d()
    path = tmp_path_factory.mktemp("vol") / "cnn3d.onnx"
    compat.torch_onnx_export_legacy(net, (torch.zeros(1, 1, 8, 32, 32),), str(path), opset_version=17,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    return {"torch": Explainer.from_torch(net, VOLUME_LAYER, progress=False),
            "keras": Explainer.from_keras(keras_cnn3d(net), VOLUME_LAYER, progress=False),
            "onnx": Explainer.from_onnx(str(path), progress=False)}


@pytest.mark.parametrize("method", CAMS)
def test_pytorch_keras_onnx_agree_on_volumes(twins, method):
    x = tiny_volumes()  # (2, 1, 8, 32, 32)
    xk = np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1))  # Keras: channels-last (N, D, H, W, C)
    assert twins["onnx"].layer == "/relu2/Relu_output_0"  # picked by itself: the last 3-D map before pooling
    got = {fw: ex.explain(xk if fw == "keras" else x, method, target=[1, 2]) for fw, ex in twins.items()}
    ref = got["torch"]
    assert ref.heatmap.shape == (2, 8, 32, 32) and ref.raw.shape == (2, 4, 16, 16)
    assert not ref.degenerate.any() and ref.raw.std() > 0
    for fw in ("keras", "onnx"):
        np.testing.assert_allclose(got[fw].scores, ref.scores, rtol=1e-4, atol=1e-6)
        scale = np.abs(ref.raw).max()
        np.testing.assert_allclose(got[fw].raw / scale, ref.raw / scale, atol=1e-4, err_msg=f"{fw} {method}")
        np.testing.assert_allclose(got[fw].heatmap, ref.heatmap, atol=1e-4, err_msg=f"{fw} {method}")


def test_gradcam_volume_equals_formula(twins):
    """Grad-CAM on a volume is w_c = mean over (d, h, w) of dS/dA, written here from torch autograd."""
    net, x = twins["torch"].adapter.model, tiny_volumes()
    acts = {}
    h = net.relu2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    try:
        out = net(torch.from_numpy(x))
    finally:
        h.remove()
    a = acts["a"]
    (g,) = torch.autograd.grad(out[:, 1].sum(), a)
    cam = (g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1).detach().numpy()
    exp = twins["torch"].explain(x, "gradcam", target=1)
    assert not exp.degenerate.any()
    np.testing.assert_allclose(exp.raw, cam, rtol=1e-4, atol=1e-7 * np.abs(cam).max())


def test_input_gradient_methods_return_volumes(twins):
    """Saliency = max_c |dS/dx| scaled per volume, gradient x input = x * dS/dx (written here from torch
    autograd); Keras agrees on the channels-last twin."""
    net, x = twins["torch"].adapter.model, tiny_volumes()
    xt = torch.from_numpy(x).requires_grad_(True)
    (g,) = torch.autograd.grad(net(xt)[:, 1].sum(), xt)
    g = g.numpy()
    sal = np.abs(g).max(1)
    exp = twins["torch"].explain(x, "saliency", target=1)
    assert exp.raw.shape == (2, 1, 8, 32, 32) and exp.heatmap.shape == (2, 8, 32, 32)
    np.testing.assert_allclose(exp.heatmap, sal / sal.max(axis=(1, 2, 3), keepdims=True), atol=1e-5)
    gxi = twins["torch"].explain(x, "gradient_x_input", target=1)
    np.testing.assert_allclose(gxi.raw, x * g, rtol=1e-4, atol=1e-6 * np.abs(x * g).max())
    k = twins["keras"].explain(np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)), "saliency", target=1)
    np.testing.assert_allclose(k.raw / np.abs(g).max(), exp.raw / np.abs(g).max(), atol=1e-4)
    np.testing.assert_allclose(k.heatmap, exp.heatmap, atol=1e-4)


def test_methods_without_volumes_say_which_have_them(twins):
    x = tiny_volumes(1)
    with pytest.raises(OptionError, match="2-D images only.*'ablationcam'.*'saliency'.*'scorecam'"):
        twins["torch"].explain(x, "guided_backprop")
    with pytest.raises(OptionError, match="2-D images only"):
        twins["onnx"].explain(x, "occlusion")


# -- tokens on a tubelet grid (t, h, w) ----------------------------------------------------------------
class TinyVideoViT(torch.nn.Module):
    """Tubelet embedding (Conv3d 2 x 8 x 8), a class token, two pre-norm blocks, head on the class token:
    the token layout of video transformers (ViViT / VideoMAE-style), in miniature."""

    def __init__(self, dim: int = 32, classes: int = 5):
        super().__init__()
        self.embed = torch.nn.Conv3d(3, dim, (2, 8, 8), stride=(2, 8, 8))
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = torch.nn.ModuleList([torch.nn.TransformerEncoderLayer(
            dim, 2, 64, dropout=0.0, batch_first=True, norm_first=True) for _ in range(2)])
        self.norm, self.head = torch.nn.LayerNorm(dim), torch.nn.Linear(dim, classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
        for b in self.blocks:
            t = b(t)
        return self.head(self.norm(t)[:, 0])


def test_tubelet_tokens_detected_and_equal_pytorch_grad_cam_and_onnx(tmp_path):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from agnostic_cam import compat

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = TinyVideoViT().eval()
    x = torch.rand(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1)).numpy()  # tokens: 1 + 4*4*4
    ex = Explainer.from_torch(net, "blocks.0", progress=False)
    exp = ex.explain(x, "gradcam", target=1)
    assert ex.adapter.layer_layout == L.LayerLayout("tokens", prefix=1, grid=(4, 4, 4))  # from the Conv3d's grid
    assert exp.raw.shape == (2, 4, 4, 4) and exp.heatmap.shape == (2, 8, 32, 32) and not exp.degenerate.any()

    def reshape(t):
        return t[:, 1:, :].reshape(t.size(0), 4, 4, 4, t.size(2)).permute(0, 4, 1, 2, 3)

    with GradCAM(net, [net.blocks[0]], reshape_transform=reshape) as cam:
        xt, targets = torch.from_numpy(x), [ClassifierOutputTarget(1)] * 2
        cam(xt, targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(xt, net.blocks[0], targets, acts, grads, False)
    np.testing.assert_allclose(exp.raw / np.abs(raw).max(), raw / np.abs(raw).max(), atol=1e-4)

    path = tmp_path / "video_vit.onnx"
    compat.torch_onnx_export_legacy(net, (torch.zeros(1, 3, 8, 32, 32),), str(path), opset_version=17,
                                    input_names=["input"], dynamic_axes={"input": {0: "n"}})
    onx = Explainer.from_onnx(str(path), "/blocks.0/Add_1_output_0", progress=False)
    assert onx.adapter.layer_layout == L.LayerLayout("tokens", prefix=1, grid=(4, 4, 4))
    for method in ("gradcam", "eigencam", "scorecam"):
        a, b = ex.explain(x, method, target=1), onx.explain(x, method, target=1)
        np.testing.assert_allclose(b.raw / np.abs(a.raw).max(), a.raw / np.abs(a.raw).max(), atol=1e-4)
        np.testing.assert_allclose(b.heatmap, a.heatmap, atol=1e-4)


def test_declared_volume_layouts_checked_against_the_tensor():
    x = tiny_volumes(1)
    ok = Explainer.from_torch(tiny_cnn3d(), "relu2", layer_layout="NCDHW", progress=False).explain(x, "gradcam", target=1)
    assert ok.raw.shape == (1, 4, 16, 16)
    for wrong in ("NCHW", "NDHWC"):  # a declared layout that misreads the tensor: refused, the right one named
        with pytest.raises(LayoutError, match="it reads as NCDHW: pass layer_layout='NCDHW'"):
            Explainer.from_torch(tiny_cnn3d(), "relu2", layer_layout=wrong, progress=False).explain(x, "gradcam")
