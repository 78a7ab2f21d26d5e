"""TorchScript modules (traced and scripted) in Explainer.from_torch equal the eager model.

Reduced for time: ResNet-18 with random seeded weights, one 64 px image.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.errors import InputError, ModelError


@pytest.fixture(scope="module")
def image():
    return np.random.RandomState(3).randn(1, 3, 64, 64).astype(np.float32)


@pytest.fixture(scope="module")
def eager(resnet18, image):
    ex = Explainer.from_torch(resnet18, "layer4")
    return {m: ex.explain(image, m, target=5) for m in ("gradcam", "scorecam")}


@pytest.mark.parametrize("kind", ["trace", "script"])
def test_scriptmodule_equals_eager(kind, resnet18, image, eager, torch):
    sm = torch.jit.trace(resnet18, torch.zeros(1, 3, 64, 64)) if kind == "trace" else torch.jit.script(resnet18)
    graph_before = str(sm.inlined_graph)
    ex = Explainer.from_torch(sm, "layer4", input_shape=(3, 64, 64))
    assert ex.layer == "layer4"
    for method in ("gradcam", "scorecam"):
        got = ex.explain(image, method, target=5)
        assert np.abs(got.heatmap - eager[method].heatmap).max() <= 1e-4, method
        np.testing.assert_allclose(got.scores, eager[method].scores, rtol=1e-4, atol=1e-4)
    # a second explainer (another layer, by module object) works: the export never changes the user's module
    sub = Explainer.from_torch(sm, sm.layer3, input_shape=(3, 64, 64))
    ref = Explainer.from_torch(resnet18, "layer3").explain(image, "gradcam", target=5).heatmap
    assert np.abs(sub.explain(image, "gradcam", target=5).heatmap - ref).max() <= 1e-4
    assert str(sm.inlined_graph) == graph_before


def test_scriptmodule_errors(resnet18, torch):
    sm = torch.jit.script(resnet18)
    with pytest.raises(InputError, match="input_shape"):
        Explainer.from_torch(sm, "layer4")
    with pytest.raises(InputError, match="closest names: 'layer4'"):
        Explainer.from_torch(sm, "layer5", input_shape=(3, 64, 64))
    # a copy: a traced module shares its parameters with the session's resnet18, and add_(1.0) then
    # sub_(1.0) does not give the same float32 bias back
    traced = torch.jit.trace(copy.deepcopy(resnet18), torch.zeros(1, 3, 64, 64))
    ex = Explainer.from_torch(traced, "layer4", input_shape=(3, 64, 64))
    with torch.no_grad():
        traced.fc.bias.add_(1.0)  # weights changed after the export: refuse instead of explaining the old ones
    with pytest.raises(ModelError, match="weights changed"):
        ex.explain(np.zeros((1, 3, 64, 64), np.float32), "scorecam")
