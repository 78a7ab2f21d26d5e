"""Forward-only methods run on ONNX Runtime, never through the framework."""
import numpy as np
import pytest

from agnostic_cam import Explainer


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam", "cam"])
def test_forward_methods_never_call_torch(torch, small_cnn, method, monkeypatch):
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    ex.adapter.engine(x.shape[1:])           # export once (this traces the torch model)
    calls = []
    handle = small_cnn.register_forward_pre_hook(lambda m, i: calls.append(1))
    ort_runs = []
    import onnxruntime as ort

    real_run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda self, *a, **k: ort_runs.append(1) or real_run(self, *a, **k))
    try:
        exp = ex.explain(x, method, target=[1, 2])
    finally:
        handle.remove()
    assert calls == [], f"{method} ran the torch model {len(calls)} times"
    assert len(ort_runs) >= 1
    assert exp.heatmap.shape == (2, 16, 16)


def test_gradient_methods_use_autograd_not_onnx(torch, small_cnn, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort.InferenceSession, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ORT used")))
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    exp = ex.explain(np.zeros((1, 3, 16, 16), np.float32) + 0.5, "gradcam")
    assert exp.heatmap.shape == (1, 16, 16)


def test_explainer_lists_methods(small_cnn):
    ex = Explainer.from_torch(small_cnn, "act3")
    for m in ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam", "cam"]:
        assert m in ex.methods
    assert "act3" in repr(ex)


def test_tail_with_skip_connection(torch, resnet18):
    """Ablation-CAM inside a residual block: the tail needs the skip tensor as an extra input."""
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    ex = Explainer.from_torch(resnet18, "layer4.1.conv1", progress=False)
    ours = ex.explain(x, "ablationcam", target=[5, 6])
    # reference: zero each channel with a forward hook on the torch model (full-model ablation)
    layer = resnet18.layer4[1].conv1
    xt = torch.from_numpy(x)
    with torch.no_grad():
        store = []
        h = layer.register_forward_hook(lambda m, i, o: store.append(o.clone()))
        y = resnet18(xt)[[0, 1], [5, 6]].numpy()
        h.remove()
        acts = store[0].numpy()
        c, n, chunk = acts.shape[1], len(x), 64
        w = np.zeros((n, c))
        for lo in range(0, c, chunk):  # full-model ablation, `chunk` channels per batched forward pass
            ks = np.arange(lo, min(lo + chunk, c))

            def ablate(m, i, o, ks=ks):
                o = o.clone()
                o.view(len(ks), n, *o.shape[1:])[np.arange(len(ks)), :, ks] = 0  # block j: channel ks[j] off
                return o
            h = layer.register_forward_hook(ablate)
            out = resnet18(xt.repeat(len(ks), 1, 1, 1)).view(len(ks), n, -1)
            h.remove()
            yk = out[:, [0, 1], [5, 6]].numpy()  # (len(ks), n)
            w[:, ks] = ((y[None] - yk) / y[None]).T
    cam = np.einsum("nc,nchw->nhw", w, acts)
    np.testing.assert_allclose(ours.raw, cam, rtol=1e-3, atol=1e-3 * np.abs(cam).max())
