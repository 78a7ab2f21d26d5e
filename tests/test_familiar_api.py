"""pytorch-grad-cam's and Captum's spellings: target objects, tensor targets, several target layers.

References: pytorch-grad-cam 1.5.7 itself (GradCAM / ScoreCAM with the same target objects and the
same ``target_layers`` list). Reduced for time: 48-64 px inputs, ResNet-18 for Grad-CAM only, the
small CNN (24 channels) for Score-CAM.
"""
from __future__ import annotations

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.errors import InputError


def pgc(cls_name, model, layers, x, targets):
    import pytorch_grad_cam

    with getattr(pytorch_grad_cam, cls_name)(model=model, target_layers=layers) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 64
        return cam(input_tensor=x, targets=targets)


def test_classifier_output_targets_match_pytorch_grad_cam(torch, small_cnn):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    torch.manual_seed(3)
    x = torch.randn(3, 3, 24, 24)
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    plain = ex.explain(x.numpy(), "gradcam", target=3)
    objs = ex.explain(x.numpy(), "gradcam", targets=[ClassifierOutputTarget(3)])  # one for every image
    np.testing.assert_array_equal(objs.heatmap, plain.heatmap)
    np.testing.assert_array_equal(objs.targets, [3, 3, 3])
    mixed = [ClassifierOutputTarget(1), ClassifierOutputSoftmaxTarget(2), ClassifierOutputTarget(4)]
    for method, ref_cls in (("gradcam", "GradCAM"), ("scorecam", "ScoreCAM")):
        ours = ex.explain(x.numpy(), method, targets=mixed)
        ref = pgc(ref_cls, small_cnn, [small_cnn.act3], x, mixed)
        assert np.abs(ours.heatmap - ref).max() <= 3e-5, method
        np.testing.assert_array_equal(ours.targets, [1, -1, 4])  # -1: a score, not a class index
        with torch.no_grad():
            sm = torch.softmax(small_cnn(x), -1).numpy()
        np.testing.assert_allclose(ours.scores[1], sm[1, 2], rtol=1e-5)


def test_rest_and_binary_targets_match_pytorch_grad_cam(torch, small_cnn):
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputReST
    from torch import nn

    torch.manual_seed(4)
    x = torch.randn(2, 3, 24, 24)
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    t = [ClassifierOutputReST(2)]
    assert np.abs(ex.explain(x.numpy(), "gradcam", targets=t).heatmap - pgc("GradCAM", small_cnn, [small_cnn.act3], x, t * 2)).max() <= 3e-5

    binary = nn.Sequential(small_cnn, nn.Linear(5, 1)).eval()
    bx = Explainer.from_torch(binary, "0.act3", progress=False)
    for c in (0, 1):
        t = [BinaryClassifierOutputTarget(c)] * 2
        ref = pgc("GradCAM", binary, [small_cnn.act3], x, t)
        assert np.abs(bx.explain(x.numpy(), "gradcam", targets=t).heatmap - ref).max() <= 3e-5
    with pytest.raises(InputError, match="one output"):
        ex.explain(x.numpy(), "gradcam", targets=[BinaryClassifierOutputTarget(1)])


def test_any_per_image_callable_and_errors(torch, small_cnn):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = np.random.default_rng(0).normal(size=(2, 3, 20, 20)).astype(np.float32)
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    diff = ex.explain(x, "gradcam", target=lambda out: out[:, 1] - out[:, 0])
    row = ex.explain(x, "gradcam", targets=[lambda o: o[1] - o[0]])  # called on one output row (K,)
    np.testing.assert_allclose(row.heatmap, diff.heatmap, atol=1e-6)
    with pytest.raises(InputError, match="3 targets for 2 images"):
        ex.explain(x, targets=[ClassifierOutputTarget(1)] * 3)
    with pytest.raises(InputError, match="not both"):
        ex.explain(x, target=1, targets=[1])


def test_tensor_targets(torch, small_cnn):
    x = np.random.default_rng(1).normal(size=(2, 3, 20, 20)).astype(np.float32)
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    ref = ex.explain(x, "gradcam", target=[2, 4])
    np.testing.assert_array_equal(ex.explain(x, "gradcam", target=torch.tensor([2, 4])).heatmap, ref.heatmap)
    np.testing.assert_array_equal(ex.explain(x, "gradcam", target=torch.tensor(2)).targets, [2, 2])
    np.testing.assert_array_equal(ex.explain(x, "eigencam", targets=[torch.tensor(2), torch.tensor(4)]).targets, [2, 4])


def test_several_target_layers_average_like_pytorch_grad_cam(torch, resnet18, small_cnn):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(5)
    x = torch.randn(2, 3, 64, 64)
    t = [ClassifierOutputTarget(3), ClassifierOutputTarget(917)]
    ex = Explainer.from_torch(resnet18, target_layers=[resnet18.layer3, resnet18.layer4], progress=False)
    assert ex.layer == "layer3 + layer4"
    ours = ex.explain(x.numpy(), "gradcam", targets=t)
    ref = pgc("GradCAM", resnet18, [resnet18.layer3, resnet18.layer4], x, t)
    assert np.abs(ours.heatmap - ref).max() <= 3e-5
    assert set(ours.meta["raw_per_layer"]) == {"layer3", "layer4"} and ours.layer == "layer3 + layer4"
    single = Explainer.from_torch(resnet18, "layer4", progress=False).explain(x.numpy(), "gradcam", targets=t)
    assert np.abs(ours.heatmap - single.heatmap).max() > 0.05  # the second layer really contributes

    xs = torch.randn(2, 3, 24, 24)
    t = [ClassifierOutputTarget(1)]
    ex = Explainer.from_torch(small_cnn, ["conv2", "act3"], progress=False)
    ref = pgc("ScoreCAM", small_cnn, [small_cnn.conv2, small_cnn.act3], xs, t * 2)
    assert np.abs(ex.explain(xs.numpy(), "scorecam", targets=t).heatmap - ref).max() <= 3e-5
    sal = ex.explain(xs.numpy(), "saliency", target=1)  # pixel-space: no layer involved, computed once
    np.testing.assert_array_equal(sal.heatmap, Explainer.from_torch(small_cnn, "act3", progress=False)
                                  .explain(xs.numpy(), "saliency", target=1).heatmap)
    with pytest.raises(InputError, match="empty"):
        Explainer.from_torch(small_cnn, [], progress=False)
