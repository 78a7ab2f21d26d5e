"""Faster R-CNN box scores and their Grad-CAM / Eigen-CAM maps against pytorch-grad-cam 1.5.7.

torchvision's fasterrcnn_mobilenet_v3_large_fpn with random seeded weights (weights=None,
weights_backbone=None: nothing downloads), score threshold 0 so random weights detect, and its
transform resized to 128 px (min_size = max_size = 128; the model's default 800 px is a reduction of
~40x in pixels, stated for speed). The requested boxes are the model's own first two detections
(each matches itself: IoU 1). pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` and its GradCAM /
EigenCAM, run on the same model, layer and boxes, are the reference: the target's score (IoU + score
per matched box), and the maps -- both at the layer's resolution (pytorch-grad-cam's per-layer CAM
before resizing, our ``raw``) and resized to the input. The same pgc target list passed to our
``explain`` (``[FasterRCNNBoxScoreTarget(...)]``, translated) and our own ``DetectionBoxes`` must
give the same maps.

Bounds: the box score is IoU + softmax score from the same float32 forward (1e-5 relative); the
layer-resolution Grad-CAM is a sum over 960 channels of weight x activation, its weights means of
the same backward pass (1e-4 of the map's maximum is > 100x their float32 rounding); the input
resolution maps go through two bilinear resizes (pytorch-grad-cam uses OpenCV's, ours our own) and
are compared at 1e-3 as the other pgc parity tests (tests/test_parity_pytorch_grad_cam.py).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.targets import DetectionBoxes

LAYER = "backbone.body.16"  # the last MobileNetV3 block (960 channels, stride 32), as test_task_targets.py


@pytest.fixture(scope="module")
def detector(torch):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=4, box_score_thresh=0.0, box_detections_per_img=20,
        min_size=128, max_size=128).eval()
    x = torch.from_numpy(np.random.default_rng(3).uniform(size=(1, 3, 128, 128)).astype(np.float32))
    with torch.no_grad():
        det = model(x)[0]
    boxes, labels = det["boxes"][:2].numpy(), det["labels"][:2].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = Explainer.from_torch(model, LAYER, progress=False)  # built once: shared read-only by the tests
    return model, x, boxes, labels, ex


def pgc_target(boxes, labels):
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    return FasterRCNNBoxScoreTarget(labels=list(labels), bounding_boxes=boxes, iou_threshold=0.5)


@pytest.mark.parametrize("name", ["gradcam", "eigencam"])
def test_detection_maps_match_pytorch_grad_cam(detector, torch, name):
    import pytorch_grad_cam as pgc

    model, x, boxes, labels, ex = detector
    with torch.no_grad():
        score = float(pgc_target(boxes, labels)(model(x)[0]))
    assert score > 2.0  # both boxes matched (IoU 1 each with their own detection)
    layer = dict(model.named_modules())[LAYER]
    cls = {"gradcam": pgc.GradCAM, "eigencam": pgc.EigenCAM}[name]
    with cls(model=model, target_layers=[layer]) as cam:
        ref = cam(input_tensor=x, targets=[pgc_target(boxes, labels)])
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = None if name == "eigencam" else cam.activations_and_grads.gradients[0].numpy()
        small = cam.get_cam_image(x, layer, [pgc_target(boxes, labels)], acts, grads, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = [ex.explain(x.numpy(), name, target=t) for t in ([pgc_target(boxes, labels)], DetectionBoxes(boxes, labels))]
    for ours in runs:
        np.testing.assert_allclose(ours.scores, [score], rtol=1e-5)  # the explained box score
        raw = np.maximum(ours.raw, 0) if name == "gradcam" else ours.raw
        want = np.maximum(small, 0)
        if name == "eigencam" and np.abs(raw - want).max() > np.abs(raw + want).max():
            raw = -raw  # the sign of a principal component is arbitrary
        assert raw.shape == want.shape and want.max() > 0
        np.testing.assert_allclose(np.maximum(raw, 0), want, rtol=0, atol=1e-4 * want.max())
        if name == "gradcam":
            np.testing.assert_allclose(ours.heatmap, ref, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(runs[0].raw, runs[1].raw)
