"""Multi-label targets: one map per (image, present class), each equal to explaining that class alone.

The present classes are recomputed here from the torch model's own forward pass (sigmoid >= threshold);
each row is compared with ``explain(image, target=class)`` and, for Grad-CAM, with pytorch-grad-cam
1.5.7 on the same class. Reductions: 24x24 inputs for the small CNN, 64x64 for resnet18.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx_helpers import export_torch, torch_net

from agnostic_cam import Explainer, Explanation
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.targets import MultiLabel

SIZE = 24


def sigmoid_net(seed: int = 3) -> torch.nn.Module:
    """conv-conv-BN-ReLU-GAP-linear (5 classes, onnx_helpers.torch_net) with a sigmoid head."""
    return torch.nn.Sequential(torch_net(seed), torch.nn.Sigmoid()).eval()


def images(n: int = 3, size: int = SIZE) -> np.ndarray:
    """Images whose scales differ, so their present classes differ."""
    x = np.random.default_rng(7).normal(size=(n, 3, size, size)).astype(np.float32)
    return x * np.arange(1, n + 1, dtype=np.float32)[:, None, None, None] ** 2


def torch_probs(net, x) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy().astype(np.float64)


def explainer(framework: str, net, size: int = SIZE, layer=None):
    if framework == "torch":
        return Explainer.from_torch(net, layer, progress=False)
    return Explainer.from_onnx(export_torch(net, size), progress=False)


def split(prob: np.ndarray) -> float:
    """A threshold between two of the middle probabilities, at their widest gap (so float32 differences
    between the framework's forward pass and ONNX Runtime's cannot move a class across it)."""
    v = np.sort(prob.ravel())
    lo, hi = len(v) // 3, 2 * len(v) // 3
    i = lo + int(np.argmax(np.diff(v[lo:hi + 1])))
    return float(v[i] + v[i + 1]) / 2


def expected_rows(present: np.ndarray) -> list[tuple[int, int]]:
    return [(i, int(c)) for i in range(len(present)) for c in np.flatnonzero(present[i])]


def assert_rows_equal_single(ex, x, exp, method, heat_atol=1e-6):
    """Row r = (i, c) equals ``explain(x[i], target=c)``; and the rows are bit-equal to explaining the
    repeated batch ``x[image_index]`` with ``target=classes`` (the expansion adds nothing to batching)."""
    assert len(exp) == len(exp.rows) == len(exp.image_index)
    same = ex.explain(x[exp.image_index], method, target=exp.targets)
    np.testing.assert_array_equal(exp.heatmap, same.heatmap)
    for r, (i, c) in enumerate(exp.rows):
        one = ex.explain(x[i:i + 1], method, target=c)
        np.testing.assert_allclose(exp.heatmap[r], one.heatmap[0], atol=heat_atol, rtol=0)
        np.testing.assert_allclose(exp.raw[r], one.raw[0], atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(exp.scores[r], one.scores[0], rtol=1e-6)
        assert int(exp.targets[r]) == c == int(one.targets[0])


@pytest.mark.parametrize("framework", ["torch", "onnx"])
@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_rows_equal_each_class_alone(framework, method):
    net, x = sigmoid_net(), images()
    prob = torch_probs(net, x)
    threshold = split(prob)
    ex = explainer(framework, net)
    exp = ex.explain(x, method, target=MultiLabel(threshold))
    present = prob >= threshold
    assert exp.rows == expected_rows(present) and len(exp.rows) >= 3
    assert exp.meta["multilabel"]["scores"] == "probabilities"  # the graph ends with a Sigmoid
    assert exp.meta["multilabel"]["present"] == [np.flatnonzero(p).tolist() for p in present]
    np.testing.assert_allclose(exp.scores, prob[exp.image_index, exp.targets], rtol=1e-5)
    np.testing.assert_allclose(exp.meta["multilabel"]["probabilities"], prob[exp.image_index, exp.targets], rtol=1e-5)
    assert_rows_equal_single(ex, x, exp, method)


def test_gradcam_rows_equal_pytorch_grad_cam_and_onnx():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, x = sigmoid_net(), images()
    threshold = split(torch_probs(net, x))
    exp = explainer("torch", net, layer="0.feat").explain(x, "gradcam", target=MultiLabel(threshold))
    with GradCAM(model=net, target_layers=[net[0].feat]) as cam:
        for r, (i, c) in enumerate(exp.rows):
            ref = cam(input_tensor=torch.from_numpy(x[i:i + 1]), targets=[ClassifierOutputTarget(c)])
            np.testing.assert_allclose(exp.heatmap[r], ref[0], atol=1e-5)
    onnx_exp = explainer("onnx", net).explain(x, "gradcam", target=MultiLabel(threshold))
    assert onnx_exp.rows == exp.rows
    np.testing.assert_allclose(onnx_exp.heatmap, exp.heatmap, atol=1e-5)


def test_logit_head_reads_sigmoid_of_the_output():
    net, x = torch_net(3), images()
    logits = torch_probs(net, x)
    assert ((logits < 0) | (logits > 1)).any()  # so 'auto' can tell
    prob = 1 / (1 + np.exp(-logits))
    threshold = split(prob)
    ex = explainer("torch", net)
    exp = ex.explain(x, "gradcam", target=MultiLabel(threshold))
    assert exp.meta["multilabel"]["scores"] == "logits"
    assert exp.rows == expected_rows(prob >= threshold)
    np.testing.assert_allclose(exp.scores, logits[exp.image_index, exp.targets], rtol=1e-5)  # the logit is explained
    assert_rows_equal_single(ex, x, exp, "gradcam")
    with pytest.raises(InputError, match="not probabilities"):
        ex.explain(x, "gradcam", target=MultiLabel(0.5, scores="probabilities"))


def test_outputs_in_unit_range_without_a_sigmoid_are_refused_unless_told():
    net, x = torch_net(3, softmax=True), images()
    ex = explainer("onnx", net)
    with pytest.raises(InputError, match="scores='logits'.*scores='probabilities'") as e:
        ex.explain(x, "gradcam", target=MultiLabel(0.2))
    assert "Softmax" in str(e.value)
    prob = torch_probs(net, x)
    exp = ex.explain(x, "gradcam", target=MultiLabel(0.2, scores="probabilities"))
    assert exp.rows == expected_rows(prob >= 0.2)
    told = ex.explain(x, "gradcam", target=MultiLabel(0.2, scores="logits"))
    assert told.rows == expected_rows(1 / (1 + np.exp(-prob)) >= 0.2)


def test_class_lists_and_images_without_a_class():
    net, x = sigmoid_net(), images()
    ex = explainer("torch", net)
    exp = ex.explain(x, "gradcam", target=MultiLabel([[1, 3], [], [0, 0]]))  # a repeated class counts once
    assert exp.rows == [(0, 1), (0, 3), (2, 0)]
    assert exp.meta["multilabel"]["no_class"] == [1] and exp.meta["multilabel"]["scores"] == "given"
    assert_rows_equal_single(ex, x, exp, "gradcam")
    none = ex.explain(x, "scorecam", target=MultiLabel([[], [], []]))
    assert len(none) == 0 and none.heatmap.shape == (0, SIZE, SIZE) and none.rows == []
    assert none.meta["multilabel"]["no_class"] == [0, 1, 2]
    assert none.overlay(x).shape == (0, SIZE, SIZE, 3)
    with pytest.raises(InputError, match="no rows .*no image has a present class"):
        none.save("never.png", x)
    threshold = float(torch_probs(net, x).max()) + 1e-3
    assert len(ex.explain(x, "gradcam", target=MultiLabel(threshold))) == 0
    with pytest.raises(InputError, match="out of range"):
        ex.explain(x, "gradcam", target=MultiLabel([[5], [], []]))
    with pytest.raises(InputError, match="one list per image"):
        ex.explain(x, "gradcam", target=MultiLabel([[1], [2]]))


@pytest.mark.parametrize("bad, match", [(1.5, r"\(0, 1\)"), (0, r"\(0, 1\)"), (True, "bool"), ("0.5", "str"),
                                        ([1, 3], r"\[\[1, 3\], \[0\]\]"), ([[1.5]], "int class indices")])
def test_bad_multilabel_arguments(bad, match):
    with pytest.raises((InputError, OptionError), match=match):
        MultiLabel(bad)
    with pytest.raises(OptionError, match="scores"):
        MultiLabel(0.5, scores="sigmoid")


def test_overlay_figure_and_npz_follow_the_rows(tmp_path):
    net, x = sigmoid_net(), images()
    ex = explainer("torch", net)
    exp = ex.explain(x, "gradcam", target=MultiLabel([[1, 3], [], [0]]))
    over = exp.overlay(x)
    assert over.shape == (3, SIZE, SIZE, 3)
    for r, (i, _) in enumerate(exp.rows):  # each row over the image it explains
        np.testing.assert_array_equal(over[r], Explanation(exp.heatmap[r:r + 1], exp.raw[r:r + 1], exp.targets[r:r + 1],
                                                           exp.scores[r:r + 1], "gradcam", "x").overlay(x[i:i + 1])[0])
    fig = exp.figure(x)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert [lab.split("\n")[:2] for lab in labels] == [["image 0", "class 1"], ["image 0", "class 3"], ["image 2", "class 0"]]
    back = Explanation.load(exp.save(tmp_path / "rows.npz"))
    assert back.rows == exp.rows
    with pytest.raises(InputError, match="images up to index 2"):
        exp.overlay(x[:2])


@pytest.mark.parametrize("framework", ["torch", "onnx"])
def test_torchvision_sigmoid_head(framework):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = torch.nn.Sequential(resnet18(weights=None, num_classes=6), torch.nn.Sigmoid()).eval()
    x = images(2, 64)  # reduced from 224 to 64 px
    prob = torch_probs(net, x)
    threshold = split(prob)
    ex = Explainer.from_torch(net, "0.layer4", progress=False) if framework == "torch" else \
        Explainer.from_onnx(export_torch(net, 64), progress=False)
    exp = ex.explain(x, "gradcam", target=MultiLabel(threshold))
    assert exp.rows == expected_rows(prob >= threshold)
    # torch's float32 convolutions (ONNX gradients run them too, through onnx2torch) differ by batch size:
    # a plain two-image batch vs one image differs by ~6e-6 in this resnet18's min-max scaled heatmap (raw
    # maps within 1e-6), so heatmaps are held to 1e-5 here; the rows are bit-equal to the repeated batch
    assert_rows_equal_single(ex, x, exp, "gradcam", heat_atol=1e-5)
    if framework == "onnx":  # reduced for time: Score-CAM's 512 masks a row on one of the two (from_torch runs
        # forward methods on its ONNX export with the same engine; both frameworks run it on the small net above)
        scored = ex.explain(x, "scorecam", target=MultiLabel([[1, 4], []]))
        assert scored.rows == [(0, 1), (0, 4)]
        assert_rows_equal_single(ex, x, scored, "scorecam")


def test_keras_sigmoid_head():
    """A Keras model whose Dense head has a sigmoid: the exported graph ends in a Sigmoid (probabilities)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    inp = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="feat")(inp)
    y = layers.Dense(5, activation="sigmoid", name="fc")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, y)
    x = images().transpose(0, 2, 3, 1).copy()  # NHWC
    prob = np.asarray(model(x, training=False), np.float64)
    threshold = split(prob)
    ex = Explainer.from_keras(model, "feat", progress=False)
    for method in ("gradcam", "scorecam"):
        exp = ex.explain(x, method, target=MultiLabel(threshold))
        assert exp.rows == expected_rows(prob >= threshold) and exp.meta["multilabel"]["scores"] == "probabilities"
        assert_rows_equal_single(ex, x, exp, method)


@pytest.mark.parametrize("method, options, layers", [
    ("occlusion", {}, None),                            # layer-free, forward only
    ("integrated_gradients", {"steps": 4}, None),       # pixel space
    ("sess", {}, None),                                 # a meta-method running its own explanations
    ("gradcam", {"aug_smooth": True}, None),
    ("gradcam++", {"eigen_smooth": True}, None),
    ("gradcam", {}, ["0.conv1", "0.feat"]),             # two target layers, averaged
])
def test_rows_equal_each_class_alone_across_method_kinds(method, options, layers):
    net, x = sigmoid_net(), images()
    ex = Explainer.from_torch(net, target_layers=layers, progress=False)
    exp = ex.explain(x, method, target=MultiLabel([[1, 3], [], [0]]), **options)
    assert exp.rows == [(0, 1), (0, 3), (2, 0)]
    for r, (i, c) in enumerate(exp.rows):
        one = ex.explain(x[i:i + 1], method, target=c, **options)
        np.testing.assert_allclose(exp.heatmap[r], one.heatmap[0], atol=1e-6, rtol=0)
