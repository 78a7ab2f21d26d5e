"""Task targets (segmentation, detection, embeddings) and output= selection: hand computations,
the same scores on NumPy and torch, parity with pytorch-grad-cam's SemanticSegmentationTarget, and a
YOLO-style ONNX detector and a torchvision detector explained for one box. Reduced sizes: 64 px
fcn_resnet50 and deeplabv3_mobilenet_v3_large (random weights, 5 classes), a 32 px two-layer
YOLO-style net, 16 RISE masks on the detector."""
from __future__ import annotations

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.errors import InputError
from agnostic_cam.targets import DetectionBoxes, SegmentationMask, Similarity


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def yolo_by_hand(out, boxes, labels, thr):
    """Loop-by-loop score of a (N, 4+K, A) head: best IoU + class score among anchors with IoU > thr."""
    scores = []
    for o in np.transpose(out, (0, 2, 1)):
        total = 0.0
        for b, c in zip(boxes, labels):
            best = None
            for a in o:
                box = [a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2]
                v = iou(b, box)
                if v > thr and (best is None or v + a[4 + c] > best):
                    best = v + a[4 + c]
            total += best or 0.0
        scores.append(total)
    return np.array(scores)


def test_targets_by_hand_on_numpy_and_torch(torch):
    rng = np.random.default_rng(0)
    seg = rng.normal(size=(2, 3, 5, 6))
    mask = rng.uniform(size=(5, 6)) > 0.5
    t = SegmentationMask(2, mask)
    np.testing.assert_allclose(t(seg), [(seg[i, 2] * mask).sum() for i in range(2)])
    np.testing.assert_allclose(t(torch.from_numpy(seg)).numpy(), t(seg))
    per = SegmentationMask(1, np.stack([mask, ~mask]))
    np.testing.assert_allclose(per(seg), [(seg[0, 1] * mask).sum(), (seg[1, 1] * ~mask).sum()])
    np.testing.assert_allclose(per.select(np.array([1, 1]))(seg), [(seg[i, 1] * ~mask).sum() for i in range(2)])

    emb = rng.normal(size=(2, 7))
    e = rng.normal(size=7)
    cos = emb @ e / np.linalg.norm(emb, axis=1) / np.linalg.norm(e)
    np.testing.assert_allclose(Similarity(e)(emb), cos, rtol=1e-6)
    np.testing.assert_allclose(Similarity(e)(torch.from_numpy(emb)).numpy(), cos, rtol=1e-6)

    yolo = np.abs(rng.normal(size=(2, 4 + 3, 9))) * 4
    yolo[:, 0] = np.tile(np.arange(9) % 3 * 4 + 2, (2, 1))
    yolo[:, 1] = np.tile(np.arange(9) // 3 * 4 + 2, (2, 1))
    yolo[:, 2:4] = 4 + rng.uniform(-1, 1, size=(2, 2, 9))
    boxes, labels = np.array([[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0]]), [1, 2]
    target = DetectionBoxes(boxes, labels, iou=0.3, format="yolo")
    want = yolo_by_hand(yolo, boxes, labels, 0.3)
    assert (want > 0).all()
    np.testing.assert_allclose(target(yolo), want, rtol=1e-6)
    np.testing.assert_allclose(target(yolo.transpose(0, 2, 1)), want, rtol=1e-6)  # (N, A, 4+K) too
    yt = torch.tensor(yolo, requires_grad=True)
    s = target(yt)
    np.testing.assert_allclose(s.detach().numpy(), want, rtol=1e-6)
    s.sum().backward()
    assert yt.grad.abs().sum() > 0  # differentiable in torch

    packed = np.zeros((1, 3, 6))
    packed[0, :, :4] = [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]]
    packed[0, :, 4] = [0.9, 0.8, 0.7]
    packed[0, :, 5] = [3, 5, 3]
    tv = DetectionBoxes([[1, 1, 11, 11], [20, 20, 30, 31]], [5, 4], format="torchvision")
    np.testing.assert_allclose(tv(packed), [1.0 + 0.8])  # the second box's label does not match: 0
    dicts = [{"boxes": torch.tensor(packed[0, :, :4]), "scores": torch.tensor(packed[0, :, 4]),
              "labels": torch.tensor(packed[0, :, 5]).long()}]
    np.testing.assert_allclose(tv(dicts).numpy(), [1.8])
    with pytest.raises(InputError):
        SegmentationMask(0, mask)(emb)


SEGMENTERS = [  # (builder name, target layer): random weights, 5 classes, 64 px input (reduced from 520)
    ("fcn_resnet50", "backbone.layer4"),
    # MobileNetV3 backbone (not ResNet-50) keeps the test light; its last feature map is backbone '16'
    ("deeplabv3_mobilenet_v3_large", "backbone.16"),
]


@pytest.mark.parametrize("builder,layer", SEGMENTERS)
def test_segmentation_gradcam_equals_pytorch_grad_cam(torch, builder, layer):
    """torchvision segmenters (random weights, 64 px input instead of 520, 5 classes instead of 21):
    Grad-CAM at the backbone's last feature map for SegmentationMask(output='out') equals
    pytorch-grad-cam 1.5.7's GradCAM with SemanticSegmentationTarget; its target object works too."""
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    torch.manual_seed(0)
    model = getattr(torchvision.models.segmentation, builder)(weights=None, weights_backbone=None,
                                                              num_classes=5).eval()
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        pred = model(torch.from_numpy(x))["out"][0].argmax(0).numpy()
    cat = int(np.bincount(pred.ravel()).argmax())
    mask = (pred == cat).astype(np.float32)

    class Out(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, t):
            return self.m(t)["out"]

    ref = GradCAM(Out(model), target_layers=[model.get_submodule(layer)])(
        torch.from_numpy(x), targets=[SemanticSegmentationTarget(cat, mask)])
    ex = Explainer.from_torch(model, layer, output="out", progress=False)
    ours = ex.explain(x, "gradcam", target=SegmentationMask(cat, mask))
    assert ref.max() > 0 and np.abs(ours.heatmap - ref).max() <= 1e-4
    np.testing.assert_allclose(ours.scores, [(ex.predict(x)[0, cat] * mask).sum()], rtol=1e-4)
    theirs = ex.explain(x, "gradcam", targets=[SemanticSegmentationTarget(cat, mask)])
    np.testing.assert_allclose(theirs.heatmap, ours.heatmap, atol=1e-6)
    default = Explainer.from_torch(model, layer, progress=False)  # {'out', 'aux'}: 'out' is explained by default
    np.testing.assert_array_equal(default.explain(x, "gradcam", target=SegmentationMask(cat, mask)).heatmap,
                                  ours.heatmap)
    with pytest.raises(InputError, match="SegmentationMask"):
        default.explain(x, "gradcam", target=0)


def yolo_net(torch, classes=3):
    """conv(s2)-ReLU-conv(s2)-ReLU-head conv -> (N, 4+K, A): cx, cy = (grid + sigmoid) * 4, w, h = 8 exp(t)."""
    from torch import nn

    class Yolo(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
            self.c2 = nn.Conv2d(8, 16, 3, 2, 1)
            self.head = nn.Conv2d(16, 4 + classes, 1)

        def forward(self, x):
            f = torch.relu(self.c2(torch.relu(self.c1(x))))
            p = self.head(f)
            n, _, h, w = p.shape
            gy, gx = torch.meshgrid(torch.arange(h, dtype=p.dtype), torch.arange(w, dtype=p.dtype), indexing="ij")
            cx = (gx + torch.sigmoid(p[:, 0])) * 4
            cy = (gy + torch.sigmoid(p[:, 1])) * 4
            wh = 8 * torch.exp(p[:, 2:4].clamp(max=2))
            cls = torch.sigmoid(p[:, 4:])
            out = torch.cat([cx[:, None], cy[:, None], wh, cls], 1)
            return out.reshape(n, 4 + classes, h * w)

    torch.manual_seed(3)
    return Yolo().eval()


def test_yolo_style_onnx_explained_for_one_box(torch, tmp_path):
    model = yolo_net(torch)
    x = np.random.default_rng(1).uniform(size=(2, 3, 32, 32)).astype(np.float32)
    path = tmp_path / "yolo.onnx"
    torch.onnx.export(model, torch.from_numpy(x[:1]), str(path), dynamo=False, input_names=["images"],
                      output_names=["output0"], dynamic_axes={"images": {0: "n"}, "output0": {0: "n"}})
    ex = Explainer.from_onnx(str(path), progress=False)
    feat = [ly.name for ly in ex.layers() if ly.shape[1] == 16][-1]  # the backbone's last feature map
    ex = Explainer.from_onnx(str(path), target_layer=feat, gradients=False, progress=False)
    out = ex.predict(x)
    assert out.shape == (2, 7, 64)
    box, label = [8.0, 8.0, 20.0, 20.0], 1
    target = DetectionBoxes([box], [label], iou=0.2, format="yolo")
    want = yolo_by_hand(out, [box], [label], 0.2)
    assert (want > 0).all()
    eig = ex.explain(x, "eigencam", target=target)
    np.testing.assert_allclose(eig.scores, want, rtol=1e-5)
    assert eig.heatmap.shape == (2, 32, 32) and np.isfinite(eig.raw).all()
    rise = ex.explain(x, "rise", target=target, masks=64, cells=4)
    np.testing.assert_allclose(rise.scores, want, rtol=1e-5)
    assert rise.raw.shape == (2, 32, 32) and rise.raw.max() > 0
    # Grad-CAM where the graph allows gradients: the PyTorch model itself
    grad = Explainer.from_torch(model, "c2", progress=False).explain(x, "gradcam", target=target)
    np.testing.assert_allclose(grad.scores, want, rtol=1e-4)


def test_torchvision_detector_explained_for_one_box(torch):
    """fasterrcnn_mobilenet_v3_large_320_fpn, random weights (score threshold 0 so random weights
    detect): its own first detection explained by Eigen-CAM and RISE; the box score by hand."""
    import warnings

    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=4, box_score_thresh=0.0, box_detections_per_img=20).eval()
    x = np.random.default_rng(2).uniform(size=(1, 3, 96, 96)).astype(np.float32)
    with torch.no_grad():
        det = model(torch.from_numpy(x))[0]
    box, label, score = det["boxes"][0].numpy(), int(det["labels"][0]), float(det["scores"][0])
    target = DetectionBoxes([box], [label])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = Explainer.from_torch(model, "backbone.body.16", progress=False)
        eig = ex.explain(x, "eigencam", target=target)
        rise = ex.explain(x, "rise", target=target, masks=16, cells=4, batch_size=8)
    np.testing.assert_allclose(eig.scores, [1.0 + score], rtol=1e-4)  # IoU of its own box = 1
    np.testing.assert_allclose(rise.scores, [1.0 + score], rtol=1e-4)
    assert eig.heatmap.shape == rise.heatmap.shape == (1, 96, 96) and np.isfinite(rise.raw).all()


def test_deletion_and_pointing_game_with_a_detection_target(torch):
    """Deletion/insertion curves score a DetectionBoxes target on the raw head at every step: the
    first deletion point is the image's box score, the last the zero image's (checked by hand)."""
    from agnostic_cam.evaluation.metrics import deletion_auc, perturbation_curve, pointing_game

    model = yolo_net(torch)
    x = np.random.default_rng(5).uniform(size=(2, 3, 32, 32)).astype(np.float32)
    ex = Explainer.from_torch(model, "c2", progress=False)
    box = [8.0, 8.0, 20.0, 20.0]
    target = DetectionBoxes([box], [1], iou=0.2, format="yolo")
    exp = ex.explain(x, "gradcam", target=target)
    curve = perturbation_curve(ex, x, exp.heatmap, "deletion", targets=target, steps=4)
    np.testing.assert_allclose(curve.scores[:, 0], yolo_by_hand(ex.predict(x), [box], [1], 0.2), rtol=1e-5)
    zero = np.zeros_like(x)
    np.testing.assert_allclose(curve.scores[:, -1], yolo_by_hand(ex.predict(zero), [box], [1], 0.2), rtol=1e-5)
    assert deletion_auc(ex, x, exp.heatmap, targets=target, steps=4).shape == (2,)
    hits = pointing_game(exp.heatmap, [[8, 8, 20, 20]] * 2, tolerance=4)
    assert hits.shape == (2,) and hits.dtype == bool
