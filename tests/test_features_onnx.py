"""Feature visualisation on bare ONNX models: the demo CNN exported by PyTorch, explained with
``Explainer.from_onnx`` and compared with ``Explainer.from_torch`` on the same weights."""
import io
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from agnostic_cam import Explainer


def _export(model, torch) -> onnx.ModelProto:
    """Dynamic-batch export that keeps BatchNormalization separate (no Conv+BN folding), so the
    graph's Conv kernels are the torch modules' own weights."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), buf, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return onnx.load_from_string(buf.getvalue())


@pytest.fixture(scope="module")
def pair(torch):
    from agnostic_cam.demo.run import demo_images
    from agnostic_cam.demo.torch_model import load_demo_net

    model = load_demo_net().eval()
    proto = _export(model, torch)
    images, _ = demo_images(3)
    ex_t = Explainer.from_torch(model, "features.relu3", input_shape=(3, 64, 64), progress=False)
    ex_o = Explainer.from_onnx(proto, progress=False)
    producer = {o: n for n in proto.graph.node for o in n.output}
    names = {}  # torch module name -> ONNX tensor name, by walking the graph's op order
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    for i, (c, r) in enumerate(zip(convs, relus), 1):
        names[f"features.conv{i}"], names[f"features.relu{i}"] = c.output[0], r.output[0]
        assert producer[producer[r.input[0]].input[0]].output[0] == c.output[0]  # Conv -> BatchNormalization -> Relu
    return model, proto, images, ex_t, ex_o, names


def test_layer_names_are_the_candidate_tensors(pair):
    *_, ex_o, names = pair
    got = ex_o.adapter.layer_names()
    assert got == [ly.name for ly in ex_o.adapter.layers()]
    assert names["features.relu1"] in got and names["features.relu3"] in got
    assert "image" not in got and "logits" not in got


def test_feature_maps_match_torch(pair):
    _, proto, images, ex_t, ex_o, names = pair
    for tl, k in (("features.relu3", 6), ("features.relu1", 4)):
        ft = ex_t.feature_maps(images, tl, top_k=k)
        fo = ex_o.feature_maps(images, names[tl], top_k=k)
        np.testing.assert_array_equal(fo.channels, ft.channels)
        np.testing.assert_allclose(fo.maps, ft.maps, atol=1e-4, rtol=0)
    # node names work like tensor names; several layers in one call come back in order
    node = next(n for n in proto.graph.node if n.output[0] == names["features.relu2"])
    a2, a1 = ex_o.adapter.activations(images, [node.name or names["features.relu2"], names["features.relu1"]])
    assert a2.shape == (3, 32, 32, 32) and a1.shape == (3, 16, 64, 64)


def test_filters_are_the_torch_conv_weights_exactly(pair):
    model, _, _, ex_t, ex_o, names = pair
    for i in (1, 2, 3):
        w = getattr(model.features, f"conv{i}").weight.detach().numpy()
        np.testing.assert_array_equal(ex_o.filters(names[f"features.conv{i}"]).weights, w)
    # a Relu after Conv -> BatchNormalization is followed back to that Conv
    np.testing.assert_array_equal(ex_o.filters(names["features.relu2"]).weights,
                                  model.features.conv2.weight.detach().numpy())


def test_deconv_reconstruction_matches_torch(pair):
    _, _, images, ex_t, ex_o, names = pair
    for rule in ("deconv", "guided"):
        rt = ex_t.deconv_reconstruction(images[:1], "features.relu2", top_k=3, rule=rule)
        ro = ex_o.deconv_reconstruction(images[:1], names["features.relu2"], top_k=3, rule=rule)
        np.testing.assert_array_equal(ro.meta["channels"], rt.meta["channels"])
        assert np.abs(ro.images).max() > 0
        np.testing.assert_allclose(ro.images, rt.images, atol=1e-3 * np.abs(rt.images).max(), rtol=0)


def test_class_model_matches_torch(pair):
    *_, ex_t, ex_o, _ = pair
    rt = ex_t.class_model([0, 2], seed=3, steps=5)
    ro = ex_o.class_model([0, 2], seed=3, steps=5)
    np.testing.assert_allclose(ro.images, rt.images, atol=1e-3 * np.abs(rt.images).max(), rtol=0)
    np.testing.assert_allclose(ro.history, rt.history, rtol=1e-3, atol=1e-3 * np.abs(rt.history).max())


def test_vjp_of_a_layer_equals_torch_autograd(pair, torch):
    model, _, images, _, ex_o, names = pair
    rng = np.random.default_rng(0)
    cot = rng.standard_normal((2, 32, 32, 32)).astype(np.float32)
    a, g = ex_o.adapter.vjp(images[:2], names["features.relu2"], lambda a: cot, rule="vanilla")
    xt = torch.from_numpy(images[:2].copy()).requires_grad_(True)
    ref = model.features[:7](xt)
    (gref,) = torch.autograd.grad(ref, xt, torch.from_numpy(cot))
    np.testing.assert_allclose(a, ref.detach().numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(g, gref.numpy(), atol=1e-4 * np.abs(gref.numpy()).max(), rtol=0)


def test_unknown_layer_lists_closest_names(pair):
    *_, ex_o, names = pair
    bad = names["features.relu2"] + "x"
    with pytest.raises(ValueError, match="closest layer names") as e:
        ex_o.feature_maps(np.zeros((1, 3, 64, 64), np.float32), bad)
    assert names["features.relu2"] in str(e.value)
    with pytest.raises(ValueError, match="not a spatial"):
        ex_o.adapter.activations(np.zeros((1, 3, 64, 64), np.float32), ["logits"])
    with pytest.raises(TypeError, match="str"):
        ex_o.adapter.activations(np.zeros((1, 3, 64, 64), np.float32), [3])


def test_filters_of_a_non_convolution_is_a_clear_error(pair):
    _, proto, *_, ex_o, names = pair
    pool = next(n for n in proto.graph.node if n.op_type == "MaxPool")
    with pytest.raises(ValueError, match="not by a convolution") as e:
        ex_o.filters(pool.output[0])
    assert "MaxPool" in str(e.value)
    with pytest.raises(ValueError, match="no tensor or node named"):
        ex_o.filters("nope")


def test_conv_weights_read_from_constant_nodes(pair):
    from onnx_helpers import initializers_to_constants

    model, proto, *_, names = pair
    ex = Explainer.from_onnx(initializers_to_constants(proto), progress=False)
    np.testing.assert_array_equal(ex.filters(names["features.conv3"]).weights,
                                  model.features.conv3.weight.detach().numpy())


def test_gradient_features_without_the_backend_name_the_extra(pair):
    _, proto, images, *_ = pair
    ex = Explainer.from_onnx(proto, gradients=False, progress=False)
    assert ex.feature_maps(images[:1], top_k=2).maps.shape[:2] == (1, 2)  # forward-only still works
    with pytest.raises(ImportError, match="onnx-grad"):
        ex.class_model(0, steps=2)


@pytest.fixture(scope="module")
def keras_onnx(pair):
    """The demo net's Keras twin (NHWC input) through tf2onnx, explained bare."""
    import onnx2torch  # noqa: F401 - torchvision must be imported before TensorFlow here
    from onnx_helpers import keras_to_onnx

    from agnostic_cam.demo.keras_model import keras_twin

    model, *_ = pair
    proto = keras_to_onnx(keras_twin(model), 64)
    by_op = {}
    for n in proto.graph.node:
        by_op.setdefault(n.op_type, []).append(n.output[0])
    return proto, Explainer.from_onnx(proto, progress=False), by_op


def test_keras_tf2onnx_features_match_torch(pair, keras_onnx):
    model, _, images, ex_t, _, _ = pair
    _, ex_k, by_op = keras_onnx
    assert ex_k.adapter.layout == "NHWC"
    x_nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    ft = ex_t.feature_maps(images, "features.relu2", top_k=5)
    fk = ex_k.feature_maps(x_nhwc, by_op["Relu"][1], top_k=5)
    np.testing.assert_array_equal(fk.channels, ft.channels)
    np.testing.assert_allclose(fk.maps, ft.maps, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(ex_k.filters(by_op["Conv"][1]).weights, model.features.conv2.weight.detach().numpy())
    rt = ex_t.deconv_reconstruction(images[:1], "features.relu2", top_k=2)
    rk = ex_k.deconv_reconstruction(x_nhwc[:1], by_op["Relu"][1], top_k=2)
    np.testing.assert_allclose(rk.images.transpose(0, 3, 1, 2), rt.images, atol=1e-3 * np.abs(rt.images).max(), rtol=0)
    ct = ex_t.class_model([1], seed=5, steps=4)
    ck = ex_k.class_model([1], seed=5, steps=4)
    np.testing.assert_allclose(ck.images.transpose(0, 3, 1, 2), ct.images, atol=1e-3 * np.abs(ct.images).max(), rtol=0)
    np.testing.assert_allclose(ck.history, ct.history, rtol=1e-3, atol=1e-3 * np.abs(ct.history).max())


def test_features_leave_the_onnx_model_unchanged(pair):
    _, proto, images, _, ex_o, names = pair
    before = proto.SerializeToString()
    ex_o.feature_maps(images[:1], names["features.relu1"], top_k=2)
    ex_o.deconv_reconstruction(images[:1], names["features.relu3"], top_k=1)
    assert proto.SerializeToString() == before
    assert ex_o.adapter.model.SerializeToString() == before


def test_filter_maximisation_deep_dream_and_invert_match_torch(pair):
    _, _, images, ex_t, ex_o, names = pair
    # one octave: the exported graph's input is fixed to 64x64, so smaller octaves are resized up
    # for the ONNX model while the fully convolutional torch model runs them at their own size
    runs = {
        "filter_maximisation": lambda ex, ly: ex.filter_maximisation(ly, [1, 3], seed=2, steps=4),
        "deep_dream": lambda ex, ly: ex.deep_dream(images[:1], ly, octaves=1, steps=4, clip=(0.0, 1.0)),
        "invert": lambda ex, ly: ex.invert(images[:1], ly, seed=2, steps=4),
    }
    for what, run in runs.items():
        rt, ro = run(ex_t, "features.relu2"), run(ex_o, names["features.relu2"])
        assert ro.images.shape == rt.images.shape, what
        np.testing.assert_allclose(ro.images, rt.images, atol=1e-3 * np.abs(rt.images).max(), rtol=0, err_msg=what)
        np.testing.assert_allclose(ro.history, rt.history, rtol=1e-3, atol=1e-3 * np.abs(rt.history).max(), err_msg=what)


def test_converted_modules_are_cached_per_tensor_and_bounded(pair):
    _, proto, images, *_ = pair
    ex = Explainer.from_onnx(proto, progress=False)
    names = ex.adapter.layer_names()
    backend = ex.adapter._backend()
    for name in names:  # more tensors than the cache holds
        a, g = ex.adapter.vjp(images[:1], name, lambda a: np.ones_like(a))
        (ref,) = ex.adapter.activations(images[:1], [name])
        np.testing.assert_allclose(a, ref, atol=1e-4, rtol=0)
        assert g.shape == images[:1].shape
    assert len(backend._modules) <= backend.max_cached + 1  # + the target layer's module
    assert backend.module_for(names[-1]) is backend.module_for(names[-1])  # reused, not converted again
    assert len(names) > backend.max_cached + 1
