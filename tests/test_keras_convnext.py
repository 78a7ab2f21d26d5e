"""Keras ConvNeXt: forward methods on the ONNX export.

keras.applications' ConvNeXt has depthwise ``Conv2D(groups=C)`` layers, which Keras runs on
TensorFlow through an XLA-compiled nested function (tf2onnx used to leave it as an unconverted
``StatefulPartitionedCall``: ONNX Runtime INVALID_GRAPH), and exact GELU (``Erfc``, also left
unconverted). Reduced for time: keras.applications' own ``ConvNeXt`` builder (the one behind
``ConvNeXtTiny``) with depths [1, 1, 1, 1] and widths [8, 16, 32, 64], 64 px, random weights;
LayerScale and stochastic depth blocks included.
"""
import numpy as np
import pytest
import torch  # noqa: F401 - torch before TensorFlow (see tests/onnx_helpers.py)

keras = pytest.importorskip("keras")

from agnostic_cam import Explainer  # noqa: E402
from independent import eigen_diff_up_to_sign  # noqa: E402


def test_convnext_forward_methods_run_on_the_onnx_export():
    from keras.src.applications.convnext import ConvNeXt

    keras.utils.set_random_seed(0)
    model = ConvNeXt(depths=[1, 1, 1, 1], projection_dims=[8, 16, 32, 64], drop_path_rate=0.1, weights=None,
                     input_shape=(64, 64, 3), classes=4, classifier_activation=None, name="mini_convnext")
    layer = "mini_convnext_stage_2_block_0_layer_scale"  # LayerScale, before stochastic depth
    ex = Explainer.from_keras(model, layer, progress=False)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)

    engine = ex.adapter.engine(x.shape[1:])
    ops = {n.op_type for n in engine.model.graph.node}
    assert not ops & {"StatefulPartitionedCall", "PartitionedCall", "Erfc"}, ops
    out, act = engine.run(x, [ex.adapter.output_name, ex.adapter.activation_name])
    np.testing.assert_allclose(out, np.asarray(model(x)), atol=1e-4)
    keras_act = ex.adapter.activations(x, [layer])[0]            # evaluated by Keras itself, (N, C, h, w)
    np.testing.assert_allclose(act.transpose(0, 3, 1, 2), keras_act, atol=1e-4)

    eig = ex.explain(x, "eigencam").heatmap                      # against an SVD of Keras' activations
    assert eigen_diff_up_to_sign(keras_act, eig) <= 1e-4
    for m in ("scorecam", "ablationcam", "gradcam"):
        h = ex.explain(x, m, target=1).heatmap
        assert h.shape == (2, 64, 64) and np.isfinite(h).all() and h.std() > 0, m
