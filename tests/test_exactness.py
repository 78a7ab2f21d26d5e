"""The performance shortcuts are exact: each is checked against the plain computation.

- Score-CAM deduplication (constant and identical channels scored once) equals scoring every
  channel, on a real ONNX Runtime model, and never builds more masked inputs than one batch.
- Ablation-CAM on the tail graph (cut after the layer, extra inputs for skip connections)
  equals ablating the channel in the full PyTorch model, channel by channel.
- The engine's I/O-binding path gives the plain path's outputs; the path is chosen by provider.
- Batched deletion/insertion curves equal the curve computed one perturbed image at a time.
"""
import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.methods import Needs, get_method
from agnostic_cam.targets import TargetSpec


@pytest.fixture(scope="module")
def skip_net(torch):
    """conv -> relu -> [dup: channels repeated, one constant] (target 'dup') -> conv2 + skip -> head.

    The target layer's output has duplicated channels (3 copies of two channels), a channel that
    is zero everywhere and one that is constant but not zero; the tail after it needs a tensor
    computed before it (the skip connection), so cutting the graph needs an extra input.
    """
    from torch import nn

    class Dup(nn.Module):
        def forward(self, y):
            return torch.cat([y, y[:, :2], y[:, :2], y[:, :1] * 0, y[:, :1] * 0 + 0.5], dim=1)

    class SkipNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
            self.dup = Dup()
            self.conv2 = nn.Conv2d(12, 12, 3, padding=1)
            self.proj = nn.Conv2d(6, 12, 1)
            self.fc = nn.Linear(12, 5)

        def forward(self, x):
            y = torch.relu(self.conv1(x))
            z = torch.relu(self.conv2(self.dup(y)) + self.proj(y))
            return self.fc(z.mean(dim=(2, 3)))

    torch.manual_seed(3)
    return SkipNet().eval()


@pytest.fixture(scope="module")
def images(torch):
    return np.random.default_rng(7).normal(size=(3, 3, 24, 24)).astype(np.float32)


def capture(ex, x, target, needs):
    return ex.capture(x, TargetSpec(target, x.shape[0]), needs)


def counting(cap):
    """Wrap cap.forward to record the rows of every call."""
    rows = []
    fwd = cap.forward

    def f(inp):
        rows.append(inp.shape[0])
        return fwd(inp)

    cap.forward = f
    return rows


def test_scorecam_dedup_equals_plain_on_onnx_runtime(skip_net, images):
    ex = Explainer.from_torch(skip_net, "dup", progress=False, layer_layout="NCHW")
    need = Needs.ACTIVATIONS | Needs.FORWARD
    cap = capture(ex, images, [0, 3, 4], need)
    n, c = cap.activations.shape[:2]
    assert c == 12
    plain_cap = capture(ex, images, [0, 3, 4], need)
    plain_rows = counting(plain_cap)
    plain = get_method("scorecam")(dedup=False, batch_size=4).weights(plain_cap)
    rows = counting(cap)
    fast = get_method("scorecam")(dedup=True, batch_size=4).weights(cap)
    np.testing.assert_allclose(fast, plain, rtol=1e-6, atol=1e-9)
    # Plain scores all n*c masked inputs; dedup scores 6 distinct channels per image + one zero image.
    assert sum(plain_rows) == n * c
    assert sum(rows) == n * 6 + 1
    assert max(rows + plain_rows) <= 4  # memory bounded by the batch, never all channels at once
    # and the full explanation is the same map
    a = ex.explain(images, "scorecam", target=[0, 3, 4], dedup=True, batch_size=5)
    b = ex.explain(images, "scorecam", target=[0, 3, 4], dedup=False, batch_size=7)
    np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-7)


def test_scorecam_plain_weights_match_torch_reference(torch, skip_net, images):
    """The plain path itself against masked inputs scored by the PyTorch model."""
    ex = Explainer.from_torch(skip_net, "dup", progress=False, layer_layout="NCHW")
    cap = capture(ex, images, [1, 2, 0], Needs.ACTIVATIONS | Needs.FORWARD)
    ours = get_method("scorecam")(dedup=True).weights(cap)
    acts = torch.from_numpy(cap.activations)
    up = torch.nn.UpsamplingBilinear2d(size=images.shape[2:])(acts)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    masks = (up - lo) / (hi - lo + 1e-8)
    # A channel constant at layer resolution has the exact mask 0; float rounding in upsampling
    # a constant leaves +-1 ulp ripples that 1 / (max - min + 1e-8) would blow up to O(1).
    flat = acts.flatten(2)
    masks[(flat.amax(2) == flat.amin(2))] = 0
    with torch.no_grad():
        for i, t in enumerate([1, 2, 0]):
            s = skip_net(torch.from_numpy(images[i])[None] * masks[i][:, None])[:, t]
            np.testing.assert_allclose(ours[i], torch.softmax(s.double(), 0).numpy(), rtol=1e-4, atol=1e-7)


def full_model_ablation(torch, model, layer_name, x, targets, channels=None):
    """w_c = (y - y_c) / y with channel c zeroed by a hook in the full PyTorch model.

    All ablations run in one batch: block k of the repeated input has channel channels[k] zeroed.
    """
    layer = dict(model.named_modules())[layer_name]
    n = len(x)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y = model(xt)[np.arange(n), targets].double()
        shape = []
        h = layer.register_forward_hook(lambda m, i, o: shape.append(o.shape))
        model(xt[:1])
        h.remove()
        chans = np.arange(shape[0][1]) if channels is None else np.asarray(channels)

        def zero(m, i, o):
            o = o.clone()
            for k, c in enumerate(chans):
                o[k * n:(k + 1) * n, c] = 0
            return o

        h = layer.register_forward_hook(zero)
        try:
            yk = model(xt.repeat(len(chans), 1, 1, 1))[np.arange(n * len(chans)), np.tile(targets, len(chans))]
        finally:
            h.remove()
    return ((y[None] - yk.double().reshape(len(chans), n)) / y[None]).numpy().T


def test_ablation_tail_equals_full_model_ablation_with_skip(torch, skip_net, images):
    ex = Explainer.from_torch(skip_net, "dup", progress=False, layer_layout="NCHW")
    engine = ex.adapter.engine(images.shape[1:])
    _, extra = engine.tail(ex.adapter.activation_name, [ex.adapter.output_name])
    assert extra, "the cut must need the skip connection as an extra input"
    targets = np.array([0, 3, 4])
    cap = capture(ex, images, targets.tolist(), Needs.ACTIVATIONS | Needs.TAIL)
    ours = get_method("ablationcam")(batch_size=5).weights(cap)
    ref = full_model_ablation(torch, skip_net, "dup", images, targets)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    assert np.all(ours[:, 10] == 0)  # the all-zero channel is skipped and weighs exactly 0


def test_ablation_tail_equals_full_model_ablation_resnet18(torch, resnet18):
    """Cut inside a residual block (layer4.1.bn1): the tail needs layer4.0's output as well."""
    x = np.random.default_rng(8).normal(size=(2, 3, 48, 48)).astype(np.float32)
    targets = np.array([3, 917])
    ex = Explainer.from_torch(resnet18, "layer4.1.bn1", progress=False)
    cap = capture(ex, x, targets.tolist(), Needs.ACTIVATIONS | Needs.TAIL)
    ours = get_method("ablationcam")().weights(cap)
    chans = np.random.default_rng(0).choice(ours.shape[1], 48, replace=False)  # 48 of 512 keep it quick
    ref = full_model_ablation(torch, resnet18, "layer4.1.bn1", x, targets, chans)
    np.testing.assert_allclose(ours[:, chans], ref, rtol=1e-3, atol=2e-5)


def test_io_binding_path_equals_plain_run(skip_net, images):
    from agnostic_cam.engine import OnnxEngine

    ex = Explainer.from_torch(skip_net, "dup", progress=False, layer_layout="NCHW")
    model = ex.adapter.engine(images.shape[1:]).model
    plain = OnnxEngine(model, providers=["CPUExecutionProvider"])
    bound = OnnxEngine(model, providers=["CPUExecutionProvider"], io_binding=True)
    assert not plain.uses_io_binding and bound.uses_io_binding
    for a, b in zip(plain.run(images, batch_size=2), bound.run(images, batch_size=2)):
        np.testing.assert_array_equal(a, b)
    # the tail and output views keep the choice
    assert bound.with_outputs(plain.output_names[-1:]).uses_io_binding


class FakeSession:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


def test_provider_selects_io_binding_and_batch_size(skip_net):
    from agnostic_cam.engine import OnnxEngine

    ex = Explainer.from_torch(skip_net, "dup", progress=False, layer_layout="NCHW")
    model = ex.adapter.engine((3, 224, 224)).model
    sample = np.zeros((1, 3, 224, 224), np.float32)
    cpu = OnnxEngine(model, providers=["CPUExecutionProvider"])
    assert cpu.device == "cpu" and not cpu.uses_io_binding
    gpu = OnnxEngine(model)
    gpu._session = FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"])  # as onnxruntime-gpu reports
    assert gpu.device == "gpu" and gpu.uses_io_binding
    assert gpu.batch_size_for(sample) > cpu.batch_size_for(sample) >= 1
    forced = OnnxEngine(model, io_binding=False)
    forced._session = FakeSession(["CUDAExecutionProvider"])
    assert not forced.uses_io_binding
    # CUDA listed but not active (CPU-only build falls back): the CPU path
    fallback = OnnxEngine(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    fallback._session = FakeSession(["CPUExecutionProvider"])
    assert fallback.device == "cpu" and not fallback.uses_io_binding


def blurred_by_hand(images):
    """The insertion baseline written here (not the library's baseline_for): RISE's Gaussian blur,
    kernel length 11, sigma 5, normalised, separable, edges replicated (torch conv2d)."""
    import torch

    k = torch.exp(-torch.arange(-5, 6, dtype=torch.float64) ** 2 / 50)
    k = k / k.sum()
    x = torch.from_numpy(images.astype(np.float64))
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (5, 5, 5, 5), mode="replicate")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 11, 1).repeat(c, 1, 1, 1), groups=c)
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, 11).repeat(c, 1, 1, 1), groups=c)
    return x.numpy().astype(np.float32)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_batched_perturbation_curve_equals_one_by_one(skip_net, images, mode):
    from agnostic_cam.evaluation.metrics import perturbation_curve, softmax

    ex = Explainer.from_torch(skip_net, "dup", progress=False, layer_layout="NCHW")
    maps = np.random.default_rng(9).uniform(size=(3, 24, 24)).astype(np.float32)
    maps[0, :4, :4] = maps[0, 5, 5]  # ties, broken by position
    steps, targets = 7, [0, 3, 4]
    curve = perturbation_curve(ex, images, maps, mode, targets=targets, steps=steps, batch_size=5, progress=False)
    base = np.zeros_like(images) if mode == "deletion" else blurred_by_hand(images)
    for i in range(3):
        order = np.argsort(-maps[i].ravel(), kind="stable")
        for k in range(steps + 1):
            n_moved = int(np.ceil(k * 24 * 24 / steps))
            moved = np.zeros(24 * 24, bool)
            moved[order[:n_moved]] = True
            moved = moved.reshape(1, 24, 24)
            src, dst = (base[i], images[i]) if mode == "deletion" else (images[i], base[i])
            img = np.where(moved, src, dst)
            p = softmax(ex.predict(img[None]).astype(np.float64))[0, targets[i]]
            np.testing.assert_allclose(curve.scores[i, k], p, rtol=1e-5, atol=1e-7)


def test_tail_views_are_built_once(skip_net, images):
    """Repeated Ablation-CAM calls reuse the tail engine and the head view feeding its extra inputs."""
    ex = Explainer.from_torch(skip_net, "dup", progress=False, layer_layout="NCHW")
    a = ex.explain(images, "ablationcam", target=[0, 3, 4])
    engine = ex.adapter.engine(images.shape[1:])
    first = ex._capturer._tails[engine]
    b = ex.explain(images, "ablationcam", target=[0, 3, 4])
    assert all(x is y for x, y in zip(ex._capturer._tails[engine], first)) and first[3] is not None
    np.testing.assert_array_equal(a.raw, b.raw)
