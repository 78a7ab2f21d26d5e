"""One contract over every registered method: shapes, dtype, range, determinism, no NaN."""
import numpy as np
import pytest

import agnostic_cam.methods  # noqa: F401 - registers the built-in methods
from agnostic_cam import Explainer, registry

NAMES = sorted(registry())
ATTENTION = {n for n, c in registry().items() if c.needs.uses_attention}  # explain transformers: run on a ViT


def explainer_for(name, small_cnn):
    """(explainer, its layer, an input shape): the small CNN, or for attention methods a tiny ViT."""
    if name in ATTENTION:
        from agnostic_cam.demo.tiny import tiny_vit

        return Explainer.from_torch(tiny_vit(), "blocks.1", input_shape=(3, 32, 32), layer_layout="tokens",
                                    progress=False), "blocks.1", (3, 32, 32)
    return Explainer.from_torch(small_cnn, "act3", progress=False), "act3", (3, 20, 18)


@pytest.mark.parametrize("name", NAMES)
def test_method_contract(small_cnn, name):
    ex, layer, shape = explainer_for(name, small_cnn)
    if name not in ex.methods:
        pytest.fail(f"{name} is registered but not runnable on a PyTorch model")
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    a = ex.explain(x, name, target=[1, 3])
    assert a.method == name and a.layer == layer
    assert a.heatmap.shape == (2, *shape[1:]) and a.heatmap.dtype == np.float32
    assert np.isfinite(a.heatmap).all() and a.heatmap.min() >= 0 and a.heatmap.max() <= 1
    assert np.isfinite(a.raw).all() and a.raw.shape[0] == 2
    np.testing.assert_array_equal(a.targets, [1, 3])
    assert a.scores.shape == (2,)
    b = ex.explain(x, name, target=[1, 3])
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)


# Which methods read the target layer, written out from each method's definition (paper): CAMs read the
# layer's activations/gradients; pixel-space gradient methods and perturbation methods never do, and
# FullGrad sums the bias gradients of every layer plus the input gradient, whatever the target layer.
PIXEL_OR_LAYER_FREE = {"saliency", "guided_backprop", "deconvnet", "gradient_x_input", "integrated_gradients",
                       "smoothgrad", "occlusion", "rise", "kernelshap", "lime", "fullgrad",
                       "attention_rollout", "chefer", "legrad"}  # these read every block's attention instead


@pytest.mark.parametrize("name", NAMES)
def test_figure_title_names_the_layer_of_every_layer_method(small_cnn, name):
    """The figure's title names the layer exactly when the method read it (ShapleyCAM, which needs a
    Hessian-vector product at the layer, once lost it: the title was computed without HVP)."""
    ex, layer, shape = explainer_for(name, small_cnn)
    x = np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32)
    exp = ex.explain(x, name, target=1)
    fig = exp.figure(x)
    title = fig._suptitle.get_text()
    assert title.startswith(name)
    if name in PIXEL_OR_LAYER_FREE:
        assert layer not in title, title
    else:
        assert title.endswith(f"at layer {layer}"), title
