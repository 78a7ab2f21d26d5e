"""Issue 26: ONNX files that return their own saliency map (``Explainer.embed``, ``agnostic-cam embed``).

The embedded files run in a subprocess that cannot import agnostic_cam, on plain ONNX Runtime (CPU; where
the CUDA provider is available, also on it, against the CPU's outputs within 1e-4 of their scale):
their original outputs equal the exported graph's (<= 1e-6) and ``saliency`` equals
``explain(x, method).heatmap`` (<= 1e-5; Eigen-CAM by power iteration against the SVD <= 1e-3).
Recipro-CAM and ViT-ReciproCAM are checked against references written here from the papers.
Random weights, 64 px, batch 2; scripts/embed_check.py runs the longer model list.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.errors import ModelError, OptionError  # noqa: E402

RUNNER = r"""
import sys
sys.modules["agnostic_cam"] = None  # the embedded file must need nothing of ours
import numpy as np, onnxruntime as ort
x = np.load(sys.argv[1])
out = {}
cuda = "CUDAExecutionProvider" in ort.get_available_providers()  # a GPU machine: run the files there too
for i, f in enumerate(sys.argv[2:]):
    for tag, prov in [("", "CPUExecutionProvider")] + ([("cuda:", ("CUDAExecutionProvider", {"use_tf32": "0"}))]
                                                     if cuda else []):  # TF32 off: float32 as the CPU
        s = ort.InferenceSession(f, providers=[prov])
        names = [o.name for o in s.get_outputs()]
        for name, v in zip(names, s.run(None, {s.get_inputs()[0].name: x})):
            out[f"{tag}{i}:{name}"] = v
np.savez(sys.argv[1] + ".out.npz", **out)
try:
    import agnostic_cam  # noqa: F401
except ImportError:
    print("isolated")
"""


def images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def run_isolated(tmp_path, x, files):
    """Outputs of each ONNX file, from ``python -I`` with agnostic_cam blocked: [{output name: array}]."""
    xp = tmp_path / "x.npy"
    np.save(xp, x)
    r = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(xp), *map(str, files)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "isolated" in r.stdout
    got = np.load(str(xp) + ".out.npz")
    res = [{} for _ in files]
    for k in got.files:
        if not k.startswith("cuda:"):
            i, name = k.split(":", 1)
            res[int(i)][name] = got[k]
    for k in (k for k in got.files if k.startswith("cuda:")):  # the CUDA provider agrees with the CPU's
        cpu = got[k[len("cuda:"):]]
        np.testing.assert_allclose(got[k], cpu, atol=1e-4 * (np.abs(cpu).max() + 1), rtol=0, err_msg=k)
    return res


def check_embedded(tmp_path, ex, x, methods, shape=(3, 64, 64)):
    """Embed each method, run the files without agnostic_cam, compare with the exported graph and explain()."""
    plain = tmp_path / "plain.onnx"
    onnx.save(ex.adapter.engine(shape).model, plain)
    files = [plain]
    for m in methods:
        files.append(tmp_path / f"{m}.onnx")
        ex.embed(files[-1], m, input_shape=shape)
    outs = run_isolated(tmp_path, x, files)
    for m, got in zip(methods, outs[1:]):
        assert set(got) == {"output", "saliency", "saliency_raw"}, m
        np.testing.assert_allclose(got["output"], outs[0]["output"], atol=1e-6, rtol=0, err_msg=m)
        e = ex.explain(x, m)
        tol = 1e-3 if m == "eigencam" else 1e-5
        assert got["saliency"].shape == e.heatmap.shape and got["saliency"].dtype == np.float32
        np.testing.assert_allclose(got["saliency"], e.heatmap, atol=tol, rtol=0, err_msg=m)
        scale = np.abs(e.raw).max()
        np.testing.assert_allclose(got["saliency_raw"], e.raw, atol=tol * scale, rtol=0, err_msg=m)


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_resnet18_every_method_runs_without_us(tmp_path):
    x = images()
    model = resnet18()
    ex = Explainer.from_torch(model, "layer4", progress=False)
    # vit_reciprocam on a CNN map: no LayerNorm to mask, the layer's tensor is masked (Gaussian neighbourhoods)
    check_embedded(tmp_path, ex, x, ["cam", "gradcam", "activation_map", "eigencam", "reciprocam", "vit_reciprocam"])
    with pytest.raises(ModelError, match="not the input of a pre-norm transformer block"):
        ex.explain(x, "vit_reciprocam", layer_only=False)


def test_mobilenet_v3_small_runs_without_us_and_cam_names_what_embeds(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    ex = Explainer.from_torch(model, "features", input_shape=(3, 64, 64), progress=False)
    check_embedded(tmp_path, ex, images(), ["activation_map", "eigencam", "reciprocam"])
    with pytest.raises(ModelError, match="global-average-pool \\+ linear head.*activation_map, eigencam"):
        ex.embed(None, "cam")  # its classifier is Linear-Hardswish-Linear: CAM is not defined there


def deit(depth=4):
    timm = pytest.importorskip("timm")
    from vit_helpers import randomise_norms

    torch.manual_seed(0)
    return randomise_norms(timm.models.vision_transformer.VisionTransformer(  # DeiT-tiny's width and heads
        img_size=64, patch_size=16, embed_dim=192, depth=depth, num_heads=3, num_classes=10).eval())


def test_deit_token_layer_runs_without_us(tmp_path):
    ex = Explainer.from_torch(deit(), "blocks.3.norm1", input_shape=(3, 64, 64), progress=False)
    check_embedded(tmp_path, ex, images(), ["activation_map", "eigencam", "reciprocam", "vit_reciprocam"])
    for m in ("cam", "gradcam"):  # a class-token head: no global average pool after the layer
        with pytest.raises(ModelError, match="global-average-pool \\+ linear head"):
            ex.embed(None, m)


def test_eigencam_power_iteration_channel_gram_and_per_class_cam(tmp_path):
    """16 channels x 256 positions: the power iteration runs on M^T M (the other branch of the
    builder); per-class CAM maps equal explain() for each class after the same per-map scaling."""
    from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
    from agnostic_cam.core.imaging import minmax

    ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
    x = tiny_images()
    check_embedded(tmp_path, ex, x, ["eigencam", "activation_map"], shape=(3, 32, 32))
    ex.embed(tmp_path / "pc.onnx", "cam", input_shape=(3, 32, 32), per_class=True)
    got = run_isolated(tmp_path, x, [tmp_path / "pc.onnx"])[0]
    assert got["saliency_per_class"].shape == (2, 4, 16, 16)
    for k in range(4):
        raw = ex.explain(x, "cam", target=k).raw
        np.testing.assert_allclose(got["saliency_per_class"][:, k], minmax(np.maximum(raw, 0)), atol=1e-5)
    with pytest.raises(OptionError, match="does not depend on the class"):
        ex.embed(None, "eigencam", input_shape=(3, 32, 32), per_class=True)
    with pytest.raises(OptionError, match="cannot live inside an ONNX graph"):
        ex.embed(None, "scorecam", input_shape=(3, 32, 32))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_reciprocam_equals_the_paper_on_resnet18():
    """Byun & Lee 2022: feature map F (C, h, w); copy k keeps position k only; the head's softmax
    probability of the predicted class at that copy is the map at k."""
    model, x = resnet18(), images()
    feats = []
    hook = model.layer3.register_forward_hook(lambda m, i, o: feats.append(o.detach()))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    hook.remove()
    f = feats[0]
    n, c, h, w = f.shape
    ref = np.zeros((n, h, w))
    for i in range(n):
        k = int(logits[i].argmax())
        mosaic = torch.zeros(h * w, c, h, w)
        for p in range(h * w):
            mosaic[p, :, p // w, p % w] = f[i, :, p // w, p % w]
        with torch.no_grad():
            y = model.fc(torch.flatten(model.avgpool(model.layer4(mosaic)), 1)).double().numpy()
        ref[i] = softmax(y)[:, k].reshape(h, w)
    got = Explainer.from_torch(model, "layer3", progress=False).explain(x, "reciprocam")
    np.testing.assert_allclose(got.raw, ref, atol=1e-5, rtol=0)


def _mosaic(t, keep_cls=True):
    """(T, d) tokens (a class token, then a g x g grid) -> (g*g, T, d): copy (r, s) keeps the class token and
    the patch tokens weighted by the 3x3 Gaussian (1/4, 1/8, 1/16) around (r, s), cut at the border."""
    T, d = t.shape
    g = int(round((T - 1) ** 0.5))
    kernel = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32) / 16
    mosaic = torch.zeros(g * g, T, d)
    for p in range(g * g):
        r, s = divmod(p, g)
        weights = torch.zeros(g + 2, g + 2)
        weights[r:r + 3, s:s + 3] = kernel
        mosaic[p, 0] = t[0] if keep_cls else 0
        mosaic[p, 1:] = t[1:] * weights[1:-1, 1:-1].reshape(-1, 1)
    return mosaic


def test_vit_reciprocam_equals_the_paper_on_deit():
    """Byun & Lee 2023 (and OpenVINO XAI's ViTReciproCAM): X, the tokens entering the last block, and LN1(X),
    its first LayerNorm's output, are both masked (class token kept, 3x3 Gaussian around each patch); the
    block runs from the two masked tensors (x' = X_ij + Attn(N_ij), then its MLP) and the rest of the network's
    softmax gives the map. The block is found from its input ('blocks.2') or from its norm ('blocks.3.norm1');
    ``layer_only=True`` masks the layer's tensor alone and recomputes the norm from it."""
    model, x = deit(), images()
    toks = []
    hook = model.blocks[2].register_forward_hook(lambda m, i, o: toks.append(o.detach()))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    hook.remove()
    t, blk = toks[0], model.blocks[3]
    n, T, _ = t.shape
    g = int(round((T - 1) ** 0.5))
    ref, ref_layer_only = np.zeros((n, g, g)), np.zeros((n, g, g))
    with torch.no_grad():
        for i in range(n):
            k = int(logits[i].argmax())
            xm, nm = _mosaic(t[i]), _mosaic(blk.norm1(t[i]))
            h = xm + blk.attn(nm)
            y = model.forward_head(model.norm(h + blk.mlp(blk.norm2(h)))).double().numpy()
            ref[i] = softmax(y)[:, k].reshape(g, g)
            y = model.forward_head(model.norm(blk(xm))).double().numpy()
            ref_layer_only[i] = softmax(y)[:, k].reshape(g, g)
    assert np.abs(ref - ref_layer_only).max() > 1e-3  # the two definitions differ on this model
    for layer in ("blocks.2", "blocks.3.norm1"):
        ex = Explainer.from_torch(model, layer, input_shape=(3, 64, 64), progress=False)
        np.testing.assert_allclose(ex.explain(x, "vit_reciprocam").raw, ref, atol=1e-5, rtol=0, err_msg=layer)
    ex = Explainer.from_torch(model, "blocks.2", input_shape=(3, 64, 64), progress=False)
    np.testing.assert_allclose(ex.explain(x, "vit_reciprocam", layer_only=True).raw, ref_layer_only, atol=1e-5, rtol=0)
    last = Explainer.from_torch(model, "blocks.3", input_shape=(3, 64, 64), progress=False)
    with pytest.raises(ModelError, match="not the input of a pre-norm transformer block.*layer_only=True"):
        last.explain(x, "vit_reciprocam")  # the last block's output feeds the final norm, not a block


def bare_tiny_cnn() -> onnx.ModelProto:
    """The demo CNN as a plain ONNX file: its exported graph (3 x 32 x 32) with only the 'output' output."""
    from agnostic_cam.demo.tiny import tiny_cnn

    src = onnx.ModelProto()
    src.CopyFrom(Explainer.from_torch(tiny_cnn(), "relu2", progress=False).adapter.engine((3, 32, 32)).model)
    keep = [o for o in src.graph.output if o.name == "output"]
    del src.graph.output[:]
    src.graph.output.extend(keep)
    return src


def test_cli_embeds_a_bare_onnx_file(tmp_path):
    """``agnostic-cam embed`` on an ONNX file: its own outputs kept, the map equals from_onnx's explain()."""
    from agnostic_cam.cli import main

    from agnostic_cam.demo.tiny import tiny_images

    onnx.save(bare_tiny_cnn(), tmp_path / "m.onnx")
    assert main(["-q", "embed", str(tmp_path / "m.onnx"), "--method", "gradcam", "-o", str(tmp_path / "e.onnx")]) == 0
    x = tiny_images()
    got = run_isolated(tmp_path, x, [tmp_path / "m.onnx", tmp_path / "e.onnx"])
    assert list(got[1]) == ["output", "saliency", "saliency_raw"]
    np.testing.assert_allclose(got[1]["output"], got[0]["output"], atol=1e-6, rtol=0)
    ex = Explainer.from_onnx(str(tmp_path / "m.onnx"), gradients=False, progress=False)
    np.testing.assert_allclose(got[1]["saliency"], ex.explain(x, "cam").heatmap, atol=1e-5, rtol=0)
    assert main(["-q", "embed", str(tmp_path / "m.onnx"), "--method", "lime", "-o", str(tmp_path / "f.onnx")]) == 2

