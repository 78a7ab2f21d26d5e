"""One contract over every registered method: shapes, dtype, range, determinism, no NaN."""
import numpy as np
import pytest

import agnostic_cam.methods  # noqa: F401 - registers the built-in methods
from agnostic_cam import Explainer, registry

NAMES = sorted(registry())
ATTENTION = {n for n, c in registry().items() if c.needs.uses_attention}  # explain transformers: run on a ViT


DETECTORS = {"drise"}  # explain a detector's boxes: run on a YOLO-style head with DetectionBoxes targets


def detector_head():
    """conv(s2)-ReLU-1x1 conv-sigmoid, flattened: (N, 4+3, A) with A = 10*9 anchors at 20x18 inputs."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 7, 1), nn.Sigmoid(), nn.Flatten(2)).eval()


def target_for(name, targets):
    """The class indices, or for detection methods one box per image labelled with them."""
    if name not in DETECTORS:
        return targets
    from agnostic_cam.targets import DetectionBoxes

    t = np.atleast_1d(targets)
    return DetectionBoxes([np.array([[0.0, 0.0, 0.5, 0.5]])] * 2, [np.array([k % 3]) for k in np.resize(t, 2)],
                          format="yolo")


def explainer_for(name, small_cnn):
    """(explainer, its layer, an input shape): the small CNN, or for attention methods a tiny ViT."""
    if name in DETECTORS:
        return Explainer.from_torch(detector_head(), "1", progress=False), "1", (3, 20, 18)
    if name in ATTENTION:
        from agnostic_cam.demo.tiny import tiny_vit

        return Explainer.from_torch(tiny_vit(), "blocks.1", input_shape=(3, 32, 32), layer_layout="tokens",
                                    progress=False), "blocks.1", (3, 32, 32)
    return Explainer.from_torch(small_cnn, "act3", progress=False), "act3", (3, 20, 18)


@pytest.mark.parametrize("name", NAMES)
def test_method_contract(small_cnn, name):
    ex, layer, shape = explainer_for(name, small_cnn)
    if name not in ex.methods and not registry()[name].detection_only:  # drise: not listed, runs on boxes
        pytest.fail(f"{name} is registered but not runnable on a PyTorch model")
    assert (name in ex.methods) != registry()[name].detection_only
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    a = ex.explain(x, name, target=target_for(name, [1, 3]))
    assert a.method == name and a.layer == layer
    assert a.heatmap.shape == (2, *shape[1:]) and a.heatmap.dtype == np.float32
    assert np.isfinite(a.heatmap).all() and a.heatmap.min() >= 0 and a.heatmap.max() <= 1
    assert np.isfinite(a.raw).all() and a.raw.shape[0] == 2
    if name not in DETECTORS:  # a box target has no class index per image
        np.testing.assert_array_equal(a.targets, [1, 3])
    assert a.scores.shape == (2,)
    b = ex.explain(x, name, target=target_for(name, [1, 3]))
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)


# Which methods read the target layer, written out from each method's definition (paper): CAMs read the
# layer's activations/gradients; pixel-space gradient methods and perturbation methods never do, and
# FullGrad sums the bias gradients of every layer plus the input gradient, whatever the target layer.
PIXEL_OR_LAYER_FREE = {"saliency", "guided_backprop", "deconvnet", "gradient_x_input", "integrated_gradients",
                       "smoothgrad", "occlusion", "rise", "drise", "kernelshap", "lime", "fullgrad",
                       "attention_rollout", "chefer", "legrad"}  # these read every block's attention instead


@pytest.fixture(scope="module")
def warm(small_cnn):
    """The explainers of ``explainer_for`` built once per kind (small CNN, ViT, detector head) and shared by
    the title tests: a title does not depend on what the explainer ran before, and building one per
    method exported its model again each time (the contract above keeps a fresh explainer per method)."""
    cache = {}

    def get(name):
        kind = "detector" if name in DETECTORS else "attention" if name in ATTENTION else "cnn"
        if kind not in cache:
            cache[kind] = explainer_for(name, small_cnn)
        return cache[kind]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_figure_title_names_the_layer_of_every_layer_method(warm, name):
    """The figure's title names the layer exactly when the method read it (ShapleyCAM, which needs a
    Hessian-vector product at the layer, once lost it: the title was computed without HVP)."""
    ex, layer, shape = warm(name)
    x = np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32)
    exp = ex.explain(x, name, target=target_for(name, 1))
    fig = exp.figure(x)
    title = fig._suptitle.get_text()
    assert title.startswith(name)
    if name in PIXEL_OR_LAYER_FREE:
        assert layer not in title, title
    else:
        assert title.endswith(f"at layer {layer}"), title
