"""The automatic target layer of from_torch: the same pick as torchcam's resolver.

torchcam (a test-only reference, requirements-dev.txt) is the independent implementation:
``torchcam.methods._utils.locate_candidate_layer`` on torchvision's ResNet-18, DenseNet-121,
MobileNetV3-Small and EfficientNet-B0 (random weights). Reduced for time: 64x64 inputs instead of
224x224 (every last feature map is still 2x2).
"""
from __future__ import annotations

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.adapters.auto_layer import choose, has_extent, record
from agnostic_cam.core.layout import LayerLayout
from agnostic_cam.errors import ModelError

SHAPE = (3, 64, 64)


@pytest.mark.parametrize("arch, expected", [("resnet18", "layer4"), ("densenet121", "features"),
                                            ("mobilenet_v3_small", "features"), ("efficientnet_b0", "features")])
def test_same_layer_as_torchcam(torch, arch, expected):
    import torchvision
    from torchcam.methods._utils import locate_candidate_layer

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    ref = locate_candidate_layer(model, SHAPE)
    ex = Explainer.from_torch(model, input_shape=SHAPE, progress=False)
    assert ex.layer == ref == expected  # expected: what torchcam's docs list for these models
    assert ex.adapter.layer is dict(model.named_modules())[ref]


def test_auto_layer_explains_like_the_named_layer(torch, small_cnn):
    """Without input_shape the resolver runs a (3, 224, 224) zero image; the result equals naming the layer."""
    import copy

    small_cnn = copy.deepcopy(small_cnn)  # its own copy: put in train mode below, the session's stays in eval
    x = np.random.default_rng(0).normal(size=(2, 3, 20, 20)).astype(np.float32)
    state = {k: v.clone() for k, v in small_cnn.state_dict().items()}
    small_cnn.train()
    auto = Explainer.from_torch(small_cnn, progress=False)
    assert small_cnn.training and all(torch.equal(v, small_cnn.state_dict()[k]) for k, v in state.items())
    small_cnn.eval()
    assert auto.layer == "act3"  # conv3 -> act3 -> pool(1x1): act3's output is the last spatial map
    named = Explainer.from_torch(small_cnn, "act3", progress=False)
    np.testing.assert_array_equal(auto.explain(x, "gradcam", target=1).raw, named.explain(x, "gradcam", target=1).raw)


def test_reused_module_and_model_itself_are_never_picked(torch):
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU()  # called twice: its activation would be ambiguous

        def forward(self, x):
            return self.relu(self.b(self.relu(self.a(x))))  # a map: fully convolutional

    ex = Explainer.from_torch(Net(), input_shape=(3, 8, 8), progress=False)
    assert ex.layer == "b"


def test_model_failing_on_the_guessed_shape_picks_at_the_images_shape(torch):
    """A model that fails on the guessed 224 px shape gets its layer at the first CAM call, from
    the images' own shape; a model without a spatial layer keeps none (layer-free methods only)."""
    from torch import nn

    fixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    ex = Explainer.from_torch(fixed, progress=False)
    assert ex.layer is None
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    ex.explain(x, "gradcam", target=0)
    assert ex.layer == "1"
    assert Explainer.from_torch(fixed, input_shape=(3, 16, 16), progress=False).layer == "1"
    flat = Explainer.from_torch(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), input_shape=(3, 2, 2), progress=False)
    assert flat.layer is None
    with pytest.raises(ModelError, match="no module.*target_layer="):
        flat.explain(x[:, :, :2, :2], "gradcam", target=0)


def test_rule_on_shapes():
    """The shared rule (every framework's records go through it) on hand-written records."""
    assert has_extent((1, 8, 3, 3), (2, 3)) and not has_extent((1, 8, 1, 1), (2, 3))
    assert has_extent((None, None, None, 8), (1, 2)) and not has_extent((1, 8), (2, 3))
    nchw, nhwc = LayerLayout("NCHW"), LayerLayout("NHWC")
    recs = [record("c1", (1, 4, 8, 8), nchw), record("gap", (1, 4, 1, 1), nchw), record("fc", (1, 2), None),
            record("late", (1, 4, 2, 1), nchw)]
    assert choose(recs)[0] == "late" and choose(recs[:3])[0] == "c1" and choose(recs[1:3])[0] is None
    assert record("any", (None, 8, None, None), nchw).positions > 1  # a map of any size counts as spatial
    assert record("hwc", (1, 3, 5, 8), nhwc).positions == 15
    head = record("seg", (1, 2, 8, 8), nchw, in_head=True)  # a segmenter's logits map: never picked
    per_head = record("q", (1, 2, 17, 8), None, main_path=False)
    assert choose([recs[0], head, per_head])[0] == "c1"
    tok = LayerLayout("tokens", prefix=1, grid=(4, 4))
    cls_only = record("final", (1, 17, 8), tok, reached=False)  # read only at its class token
    assert choose([recs[0], record("ln1", (1, 17, 8), tok), cls_only])[0] == "ln1"
    levels = [record(n, (1, 8, s, s), nchw, level=True) for n, s in (("p3", 8), ("p4", 4), ("p5", 2))]
    name, why = choose([recs[0], *levels, record("cls_conv", (1, 3, 2, 2), nchw)])
    assert name == "p5" and "coarsest" in why  # a detector: the coarsest level its head reads
