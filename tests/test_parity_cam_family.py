"""The rest of pytorch-grad-cam 1.5.7's CAM family and its aug_smooth / eigen_smooth options,
against pytorch-grad-cam itself (test-only reference) on ResNet-18 and MobileNetV3-Small with
random weights. Reduced for time: 96 px inputs (3x3 last-stage maps), two images per model."""
import contextlib
import io

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.targets import TargetSpec

TOL = 1e-4
# (our method, our options, pytorch-grad-cam class name, its call options, principal-component sign to fix?)
CASES = {
    "eigengradcam": ("eigengradcam", {}, "EigenGradCAM", {}, True),
    "gradcam_elementwise": ("gradcam_elementwise", {}, "GradCAMElementWise", {}, False),
    "kpcacam": ("kpcacam", {}, "KPCA_CAM", {}, False),
    "fem": ("fem", {}, "FEM", {}, False),
    "segeigencam": ("segeigencam", {}, "SegEigenCAM", {}, False),
    "shapleycam": ("shapleycam", {}, "ShapleyCAM", {}, False),  # H A != 0 on MobileNetV3 (hardswish, SE)
    "fullgrad": ("fullgrad", {}, "FullGrad", {}, False),
    "gradcam_aug": ("gradcam", {"aug_smooth": True}, "GradCAM", {"aug_smooth": True}, False),
    "gradcam++_aug": ("gradcam++", {"aug_smooth": True}, "GradCAMPlusPlus", {"aug_smooth": True}, False),
    "gradcam_eigen": ("gradcam", {"eigen_smooth": True}, "GradCAM", {"eigen_smooth": True}, True),
    "gradcam++_eigen": ("gradcam++", {"eigen_smooth": True}, "GradCAMPlusPlus", {"eigen_smooth": True}, True),
}


@pytest.fixture(scope="module")
def models(torch, resnet18):
    import torchvision

    torch.manual_seed(3)
    mnet = torchvision.models.mobilenet_v3_small(weights=None)
    # Freshly initialised MobileNetV3 activations vanish (std 1e-8 at features.12): calibrate the
    # BatchNorm statistics on one random batch so the maps are not numerical noise.
    for m in mnet.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    mnet.train()
    with torch.no_grad():
        mnet(torch.randn(16, 3, 96, 96))
    mnet.eval()
    torch.manual_seed(11)
    x = torch.randn(2, 3, 96, 96)
    return {name: (model, layer, x, targets, Explainer.from_torch(model, layer, progress=False))
            for name, model, layer, targets in (("resnet18", resnet18, "layer4", [3, 917]),
                                                ("mobilenet_v3", mnet, "features.12", [5, 400]))}


def pgc_reference(model, layer, x, targets, cls_name, call, sign_free, monkeypatch):
    """pytorch-grad-cam's heatmaps. ``sign_free``: its principal components (whose sign SVD leaves
    arbitrary) get our sign rule, positive correlation with the channel sum of what is projected.
    ``layer``: a module, or a list of modules (pytorch-grad-cam averages their CAMs)."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if sign_free:
        import pytorch_grad_cam.base_cam as base
        import pytorch_grad_cam.eigen_grad_cam as egc

        orig = base.get_2d_projection

        def signed(a):
            p = orig(a)
            flip = np.einsum("nhw,nhw->n", p, np.nan_to_num(a).sum(axis=1)) < 0
            return np.where(flip[:, None, None], -p, p)

        for mod in (base, egc):
            monkeypatch.setattr(mod, "get_2d_projection", signed)
    with contextlib.redirect_stdout(io.StringIO()), getattr(pgc, cls_name)(
            model=model, target_layers=layer if isinstance(layer, list) else [layer]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets], **call)


@pytest.mark.parametrize("model_name", ["resnet18", "mobilenet_v3"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_pytorch_grad_cam(models, model_name, case, monkeypatch):
    method, opts, cls_name, call, sign_free = CASES[case]
    model, layer, x, targets, ex = models[model_name]
    ours = ex.explain(x.numpy(), method, target=targets, **opts)
    module = dict(model.named_modules())[layer]
    ref = pgc_reference(model, module, x, targets, cls_name, call, sign_free, monkeypatch)
    diff = np.abs(ours.heatmap - ref).max(axis=(1, 2))
    assert diff.max() <= TOL, f"{case} on {model_name}: max abs diff {diff}"
    assert ours.heatmap.shape == ref.shape and ours.heatmap.min() >= 0 and ours.heatmap.max() <= 1
    np.testing.assert_array_equal(ours.targets, targets)


@pytest.mark.parametrize("kernel", ["linear", "poly", "rbf", "sigmoid", "cosine"])
def test_kernel_projection_is_sklearn_kernel_pca(kernel, rng):
    """KPCA-CAM's projection equals scikit-learn's KernelPCA(n_components=1) (test-only reference),
    in float64 so the comparison is not limited by single precision."""
    from sklearn.decomposition import KernelPCA

    from agnostic_cam.methods.projection import kernel_projection

    acts = rng.normal(size=(2, 12, 5, 4))
    ours = kernel_projection(acts, kernel, gamma=0.05)
    for a, o in zip(acts, ours):
        m = a.reshape(12, -1).T
        ref = KernelPCA(n_components=1, kernel=kernel, gamma=0.05).fit_transform(m - m.mean(axis=0))
        np.testing.assert_allclose(o.reshape(-1), ref[:, 0], rtol=1e-4, atol=1e-5)


def test_randomcam_weights_are_seeded_uniform(models):
    """Random-CAM: pytorch-grad-cam draws w ~ U(-1, 1) per image and channel from NumPy's global
    state; ours draws the same distribution from a seeded generator."""
    from agnostic_cam.methods.base import get_method

    model, layer, x, targets, ex = models["resnet18"]
    a = ex.explain(x.numpy(), "randomcam", seed=7)
    b = ex.explain(x.numpy(), "randomcam", seed=7)
    c = ex.explain(x.numpy(), "randomcam", seed=8)
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    assert np.abs(a.heatmap - c.heatmap).max() > 1e-3
    acts = np.zeros((4000, 50, 1, 1), np.float32)
    cap = type("Cap", (), {"activations": acts})()
    w = get_method("randomcam")(seed=0).weights(cap)
    assert w.min() >= -1 and w.max() < 1
    # uniform on [-1, 1): mean 0, variance 1/3, flat histogram (200000 draws)
    assert abs(w.mean()) < 0.01 and abs(w.var() - 1 / 3) < 0.01
    hist = np.histogram(w, bins=10, range=(-1, 1))[0] / w.size
    np.testing.assert_allclose(hist, 0.1, atol=0.005)
    # the map is sum_c w_c A_c with those weights
    x96 = x.numpy()
    act = ex.capture(x96, TargetSpec(None, 2), get_method("randomcam").needs).activations
    w7 = np.random.default_rng(7).uniform(-1, 1, size=act.shape[:2])
    np.testing.assert_allclose(a.raw, np.einsum("nc,nchw->nhw", w7, act), rtol=1e-4, atol=1e-4)


def test_second_order_methods_on_the_onnx_backend(models, tmp_path):
    """ShapleyCAM and FullGrad through the ONNX gradient backend equal from_torch on the exported
    file (MobileNetV3: a non-zero Hessian term; BatchNorm folded into the convolutions by the export
    leaves FullGrad unchanged here, the convolutions before BatchNorm having no bias)."""
    model, layer, x, targets, ex = models["mobilenet_v3"]
    path = tmp_path / "m.onnx"
    path.write_bytes(ex.adapter.engine(tuple(x.shape[1:])).model.SerializeToString())
    ex_onnx = Explainer.from_onnx(str(path), target_layer="activation", progress=False)
    assert {"shapleycam", "fullgrad"} <= set(ex_onnx.methods)
    for name in ("shapleycam", "fullgrad"):
        a = ex.explain(x.numpy(), name, target=targets).heatmap
        b = ex_onnx.explain(x.numpy(), name, target=targets).heatmap
        assert np.abs(a - b).max() <= 1e-4, name


@pytest.mark.parametrize("model_name", ["resnet18", "mobilenet_v3"])
def test_finercam_matches_pytorch_grad_cam(models, model_name):
    """Finer-CAM: top-1 targets (pytorch-grad-cam's default) and explicit targets with alpha 0.6
    (its ``target_idx``, one image per call as it takes one index)."""
    from pytorch_grad_cam import FinerCAM

    model, layer, x, targets, ex = models[model_name]
    module = dict(model.named_modules())[layer]
    with FinerCAM(model, [module]) as cam:
        ref = cam(x)
    ours = ex.explain(x.numpy(), "finercam")
    assert np.abs(ours.heatmap - ref).max() <= TOL
    np.testing.assert_array_equal(ours.targets, ex.predict(x.numpy()).argmax(axis=1))
    ours = ex.explain(x.numpy(), "finercam", target=targets, alpha=0.6)
    for i, t in enumerate(targets):
        with FinerCAM(model, [module]) as cam:
            ref = cam(x[i:i + 1], target_idx=t, alpha=0.6)
        assert np.abs(ours.heatmap[i] - ref[0]).max() <= TOL
    np.testing.assert_array_equal(ours.targets, targets)


@pytest.mark.parametrize("model_name,layers", [("resnet18", ["layer3", "layer4"]),
                                               ("mobilenet_v3", ["features.8", "features.12"])])
def test_refinecam_matches_pytorch_grad_cam(models, model_name, layers):
    """RefineCAM over two layers (Grad-CAM++ per layer, product, min-max)."""
    from pytorch_grad_cam import RefineCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, _, x, targets, _ = models[model_name]
    ex = Explainer.from_torch(model, target_layers=layers, progress=False)
    ours = ex.explain(x.numpy(), "refinecam", target=targets)
    named = dict(model.named_modules())
    ref = RefineCAM(model, [named[n] for n in layers])(x, [ClassifierOutputTarget(t) for t in targets])
    assert np.abs(ours.heatmap - ref).max() <= TOL
    np.testing.assert_array_equal(ours.targets, targets)


@pytest.mark.parametrize("model_name", ["resnet18", "mobilenet_v3"])
def test_sess_matches_pytorch_grad_cam(models, model_name):
    """SESS over Grad-CAM, at a reduced scale count (2 scales instead of 12: 5 patches per image),
    and on a non-square crop with top-1 targets."""
    from pytorch_grad_cam.sess import SESS
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer, x, targets, ex = models[model_name]
    module = dict(model.named_modules())[layer]
    ours = ex.explain(x.numpy(), "sess", target=targets, num_scales=2)
    with SESS(model, [module], num_scales=2) as cam:
        ref = cam(x, [ClassifierOutputTarget(t) for t in targets])
    assert np.abs(ours.heatmap - ref).max() <= TOL
    crop = x[:1, :, :, :80]
    ours = ex.explain(crop.numpy(), "sess", num_scales=2, pool="max")
    with SESS(model, [module], num_scales=2, pool="max") as cam:
        ref = cam(crop)
    assert np.abs(ours.heatmap - ref).max() <= TOL


@pytest.mark.parametrize("model_name", ["resnet18", "mobilenet_v3"])
def test_feature_factorization_matches_pytorch_grad_cam(models, model_name):
    """Deep Feature Factorization: concepts, per-image concept heatmaps and the head's scores of
    each concept against pytorch-grad-cam's DeepFeatureFactorization (classifier on concepts)."""
    from pytorch_grad_cam import DeepFeatureFactorization

    model, layer, x, _, ex = models[model_name]
    f = ex.feature_factorization(x.numpy(), n_components=4)
    head = model.fc if model_name == "resnet18" else None
    d = DeepFeatureFactorization(model, dict(model.named_modules())[layer], computation_on_concepts=head)
    ref = d(x, 4)
    concepts, expl = ref[0], np.stack(ref[1])
    assert f.concepts.shape == concepts.shape and f.explanations.shape == expl.shape == (2, 4, 96, 96)
    assert np.abs(f.concepts - concepts).max() <= 1e-4 * np.abs(concepts).max()
    assert np.abs(f.explanations - expl).max() <= TOL
    if head is not None:  # GAP + linear head: the tail of a map filled with the concept is fc(concept)
        assert np.abs(f.concept_scores - ref[2]).max() <= 1e-4 * np.abs(ref[2]).max()
    fig = f.figure()
    assert len(fig.axes) == 4
