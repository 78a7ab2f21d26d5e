"""Faithfulness metrics against hand-computed values and on a model that looks at one region only."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from agnostic_cam.evaluation import metrics
from agnostic_cam.engine import OnnxEngine


def linear_onnx(weights: np.ndarray, shape: tuple, bias: np.ndarray | None = None) -> OnnxEngine:
    """ONNX model: output (N, K) = flatten(image) @ weights (+ bias); image (N, *shape)."""
    k = weights.shape[1]
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("MatMul", ["f", "W"], ["y0"]),
             helper.make_node("Add", ["y0", "b"], ["y"])]
    b = np.zeros(k, np.float32) if bias is None else bias.astype(np.float32)
    g = helper.make_graph(nodes, "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *shape])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", k])],
                          [numpy_helper.from_array(weights.astype(np.float32), "W"), numpy_helper.from_array(b, "b")])
    return OnnxEngine(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), batch_size=3)


# -- hand-computed values on a 2x2 toy model: y0 = sum of pixels, y1 = 0 ------------------------------
X = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)      # (1, 1, 2, 2)
MAP = np.array([[[0.1, 0.4], [0.3, 0.2]]], np.float32)     # order of removal: 2, 3, 4, 1
TOY = linear_onnx(np.stack([np.ones(4), np.zeros(4)], axis=1), (1, 2, 2))


def test_deletion_auc_hand_computed():
    # pixels removed (set to 0): scores 10, 8, 5, 1, 0; trapezoids (9 + 6.5 + 3 + 0.5) / 4
    curve = metrics.perturbation_curve(TOY, X, MAP, "deletion", targets=0, steps=4, score="raw")
    np.testing.assert_allclose(curve.scores, [[10, 8, 5, 1, 0]])
    np.testing.assert_allclose(curve.x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(metrics.deletion_auc(TOY, X, MAP, 0, steps=4, score="raw"), [4.75])
    # two steps: 10, 5, 0 -> (7.5 + 2.5) / 2
    np.testing.assert_allclose(metrics.deletion_auc(TOY, X, MAP, 0, steps=2, score="raw"), [5.0])


def test_insertion_auc_hand_computed():
    # pixels inserted into a zero image: 0, 2, 5, 9, 10 -> (1 + 3.5 + 7 + 9.5) / 4
    np.testing.assert_allclose(metrics.insertion_auc(TOY, X, MAP, 0, steps=4, baseline=0.0, score="raw"), [5.25])
    # with the softmax score: p0 = sigmoid(sum)
    s = 1 / (1 + np.exp(-np.array([0, 2, 5, 9, 10.0])))
    ref = ((s[1:] + s[:-1]) / 2).sum() / 4
    np.testing.assert_allclose(metrics.insertion_auc(TOY, X, MAP, 0, steps=4, baseline="zero"), [ref], rtol=1e-6)


def test_confidence_change_hand_computed():
    maps = np.array([[[1.0, 0.5], [0.0, 0.25]]], np.float32)
    # masked image 1, 1, 0, 1 -> sum 3; Y = sigmoid(10), O = sigmoid(3)
    y, o = 1 / (1 + np.exp(-10.0)), 1 / (1 + np.exp(-3.0))
    r = metrics.confidence_change(TOY, X, maps, 0)
    np.testing.assert_allclose(r["drop"], [(y - o) / y], rtol=1e-6)
    np.testing.assert_allclose(metrics.average_drop(TOY, X, maps, 0), 100 * (y - o) / y, rtol=1e-6)
    assert metrics.increase_in_confidence(TOY, X, maps, 0) == 0.0
    # class 1 (logit 0) gains confidence when the evidence for class 0 shrinks
    assert metrics.increase_in_confidence(TOY, X, maps, 1) == 100.0
    assert metrics.confidence_change(TOY, X, maps, 1)["drop"][0] == 0.0


# -- a model that only looks at one region ---------------------------------------------------------
SIZE = 24
REGION = (slice(6, 12), slice(12, 20))


@pytest.fixture(scope="module")
def region_model():
    ind = np.zeros((3, SIZE, SIZE), np.float32)
    ind[:, REGION[0], REGION[1]] = 1.0
    w0 = ind.reshape(-1) * 8 / ind.sum()
    return linear_onnx(np.stack([w0, np.zeros_like(w0)], axis=1), (3, SIZE, SIZE), bias=np.array([-4.0, 0.0]))


def test_perfect_map_beats_random_maps(region_model):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.3, size=(4, 3, SIZE, SIZE)).astype(np.float32)   # dark background,
    x[:, :, REGION[0], REGION[1]] = rng.uniform(0.8, 1.0, size=(4, 3, 6, 8))  # a bright object
    perfect = np.zeros((4, SIZE, SIZE), np.float32)
    perfect[:, REGION[0], REGION[1]] = 1.0
    perfect += rng.uniform(0, 0.01, size=perfect.shape)   # arbitrary order inside and outside the region
    random = rng.uniform(size=(4, SIZE, SIZE)).astype(np.float32)
    for kw in ({"baseline": None}, {"baseline": "zero"}):
        d_p = metrics.deletion_auc(region_model, x, perfect, 0, steps=16, **kw)
        d_r = metrics.deletion_auc(region_model, x, random, 0, steps=16, **kw)
        i_p = metrics.insertion_auc(region_model, x, perfect, 0, steps=16, **kw)
        i_r = metrics.insertion_auc(region_model, x, random, 0, steps=16, **kw)
        assert (d_p < d_r - 0.05).all(), (d_p, d_r)
        assert (i_p > i_r + 0.05).all(), (i_p, i_r)
    # the perfect mask keeps every pixel the model uses: no drop at all; a random map drops
    mask = np.zeros((4, SIZE, SIZE), np.float32)
    mask[:, REGION[0], REGION[1]] = 1.0
    assert metrics.average_drop(region_model, x, mask, 0) == pytest.approx(0.0, abs=1e-5)
    assert metrics.average_drop(region_model, x, random, 0) > 5.0


def test_metrics_accept_explainer_and_nhwc(torch):
    """Through an Explainer on an ONNX export, and NHWC images, the numbers equal the torch model's."""
    from onnx_helpers import export_torch, torch_net

    from agnostic_cam import Explainer

    net = torch_net()
    ex = Explainer.from_onnx(export_torch(net, 16), progress=False)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 16, 16)).astype(np.float32)
    maps = rng.uniform(size=(2, 16, 16)).astype(np.float32)

    def fwd(b):
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(b))).numpy()

    a = metrics.deletion_auc(ex, x, maps, [1, 2], steps=8, batch_size=5)
    np.testing.assert_allclose(a, metrics.deletion_auc(fwd, x, maps, [1, 2], steps=8), rtol=1e-4)
    x_nhwc = x.transpose(0, 2, 3, 1)
    nhwc = metrics.deletion_auc(lambda b: fwd(b.transpose(0, 3, 1, 2)), x_nhwc, maps, [1, 2], steps=8, layout="NHWC")
    np.testing.assert_allclose(nhwc, a, rtol=1e-4)


def test_blur_matches_direct_convolution():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(1, 2, 7, 9)).astype(np.float32)
    r, sigma = 2, 1.5
    k1 = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k2 = np.outer(k1, k1) / k1.sum() ** 2
    p = np.pad(img, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    ref = np.zeros_like(img)
    for y in range(7):
        for x in range(9):
            ref[:, :, y, x] = (p[:, :, y:y + 2 * r + 1, x:x + 2 * r + 1] * k2).sum(axis=(2, 3))
    np.testing.assert_allclose(metrics.blur(img, "NCHW", sigma, r), ref, atol=1e-5)
    nhwc = metrics.blur(img.transpose(0, 2, 3, 1), "NHWC", sigma, r)
    np.testing.assert_allclose(nhwc, ref.transpose(0, 2, 3, 1), atol=1e-5)


def test_pointing_game():
    maps = np.zeros((3, 10, 10), np.float32)
    maps[0, 2, 3] = 1      # inside box 0
    maps[1, 9, 9] = 1      # outside box 1, 2 px from it
    maps[2, 5, 5] = 1      # inside the second box of image 2
    boxes = [[1, 1, 4, 5], [0, 0, 8, 8], [[0, 0, 2, 2], [4, 4, 6, 6]]]
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes), [True, False, True])
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=2), [True, True, True])


def test_metric_input_errors():
    with pytest.raises(ValueError, match="maps must be"):
        metrics.deletion_auc(TOY, X, np.zeros((1, 3, 3)), 0)
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion_auc(TOY, X, MAP, 0, steps=0)
    with pytest.raises(ValueError, match="score"):
        metrics.insertion_auc(TOY, X, MAP, 0, score="prob")
    with pytest.raises(ValueError, match="positive scores"):
        metrics.average_drop(TOY, -X, MAP, 0, score="raw")
    with pytest.raises(ValueError, match="boxes"):
        metrics.pointing_game(np.zeros((2, 4, 4)), [[0, 0, 1, 1]])
    with pytest.raises(TypeError, match="model must be"):
        metrics.deletion_auc(42, X, MAP, 0)
