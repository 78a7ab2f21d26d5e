"""D-RISE against its paper's equations (Petsiuk et al. 2021, eq. 2-5) written here loop by loop, with
the same masks, on a YOLO-style head (N, 4+K, A), a torchvision-style packed output (N, D, 6) and a
random-weight YOLOv8n exported to ONNX (96 px input instead of 640: a size reduction to keep the test fast)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from agnostic_cam import Explainer
from agnostic_cam.errors import InputError, OptionError
from agnostic_cam.methods.rise import rise_masks
from agnostic_cam.targets import DetectionBoxes


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def weight_yolo(out, boxes, labels) -> float:
    """eq. 2-5 for one output (4+K, A): sum over boxes of max over anchors of IoU * cos(onehot, P) * max(P)."""
    total = 0.0
    for box, c in zip(boxes, labels):
        best = -math.inf
        for a in range(out.shape[1]):
            cx, cy, w, h = (float(v) for v in out[:4, a])
            p = out[4:, a].astype(np.float64)
            onehot = np.zeros_like(p)
            onehot[c] = 1
            cos = float(onehot @ p / (np.linalg.norm(onehot) * np.linalg.norm(p)))
            best = max(best, iou(box, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)) * cos * float(p.max()))
        total += best
    return total


def weight_packed(out, boxes, labels) -> float:
    """eq. 2-5 for packed rows (D, 6): the class vector is score * onehot(label), objectness the score."""
    total = 0.0
    for box, c in zip(boxes, labels):
        total += max(iou(box, r[:4]) * float(round(r[5]) == c) * float(r[4]) for r in out)
    return total


def reference(model_fn, x, masks, weight, boxes, labels):
    """(N, H, W): 1/m sum_i w_i M_i with each masked image run through ``model_fn`` (the framework itself)."""
    ref = np.zeros((len(x), *masks.shape[1:]))
    for i in range(len(x)):
        for m in masks:
            ref[i] += weight(model_fn(x[i] * m[None])[0], boxes[i], labels[i]) * m
    return ref / len(masks)


@pytest.fixture
def heads(torch):
    from test_audit_tasks import head, tiny_yolo_class

    torch.manual_seed(0)

    Yolo = tiny_yolo_class()

    class Packed(Yolo):
        def forward(self, x):  # per image its 6 best anchors as rows [x1, y1, x2, y2, score, label]
            o = head(torch, x, self.c1, self.c2, self.hd).transpose(1, 2)
            score, label = o[..., 4:].max(-1)
            s, idx = score.topk(6, dim=1)
            b = torch.gather(o[..., :4], 1, idx[..., None].expand(-1, -1, 4))
            xyxy = torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)
            return torch.cat([xyxy, s[..., None], torch.gather(label, 1, idx)[..., None].float()], -1)

    return Yolo().eval(), Packed().eval()


def run(torch, model):
    return lambda a: model(torch.from_numpy(np.asarray(a, np.float32)[None])).detach().numpy().astype(np.float64)


def test_drise_equals_the_paper_on_a_yolo_head_with_the_same_masks(torch, heads):
    model = heads[0]
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    boxes = [np.array([[4.0, 6.0, 20.0, 24.0]]), np.array([[10.0, 2.0, 30.0, 14.0], [0.0, 16.0, 12.0, 31.0]])]
    labels = [np.array([1]), np.array([2, 0])]
    masks = rise_masks(np.random.default_rng(3), 12, 4, 0.5, (32, 32))
    ex = Explainer.from_torch(model, "c2", progress=False)
    target = DetectionBoxes(boxes, labels, format="yolo")
    got = ex.explain(x, "drise", target=target, masks=masks, batch_size=5)
    ref = reference(run(torch, model), x, masks, weight_yolo, boxes, labels)
    np.testing.assert_allclose(got.raw, ref, atol=1e-6)
    assert np.ptp(ref) > 1e-3  # the maps carry information (not a constant)
    # the seeded masks are RISE's masks drawn from that seed (one batch here): the same map
    seeded = ex.explain(x, "drise", target=target, masks=12, cells=4, seed=3, batch_size=12)
    np.testing.assert_allclose(seeded.raw, got.raw, atol=1e-7)
    assert got.heatmap.min() == 0 and got.heatmap.max() == pytest.approx(1, abs=1e-5)  # min-max per image


def test_drise_equals_the_paper_on_packed_torchvision_rows(torch, heads):
    model = heads[1]
    x = np.random.default_rng(1).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    own = [run(torch, model)(xi)[0] for xi in x]  # explain each image's own best detection
    boxes = [o[:1, :4] for o in own]
    labels = [np.rint(o[:1, 5]).astype(int) for o in own]
    masks = rise_masks(np.random.default_rng(4), 10, 4, 0.5, (32, 32))
    ex = Explainer.from_torch(model, "c2", progress=False)
    got = ex.explain(x, "drise", target=DetectionBoxes(boxes, labels, format="torchvision"), masks=masks)
    ref = reference(run(torch, model), x, masks, weight_packed, boxes, labels)
    np.testing.assert_allclose(got.raw, ref, atol=1e-6)
    assert np.ptp(ref) > 1e-4


def test_drise_needs_detection_boxes_and_masks_of_the_image_size(torch, heads):
    ex = Explainer.from_torch(heads[0], "c2", progress=False)
    x = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(OptionError, match="DetectionBoxes"):
        ex.explain(x, "drise", target=0, masks=4)
    with pytest.raises(OptionError, match="masks are"):
        ex.explain(x, "drise", target=DetectionBoxes([[0, 0, 4, 4]], [0], format="yolo"), masks=np.ones((2, 16, 16)))
    with pytest.raises(OptionError, match="masks"):
        ex.explain(x, "drise", target=DetectionBoxes([[0, 0, 4, 4]], [0], format="yolo"), masks=0)
    with pytest.raises(OptionError, match=r"\[0, 1\]"):
        ex.explain(x, "drise", target=DetectionBoxes([[0, 0, 4, 4]], [0], format="yolo"), masks=np.full((2, 32, 32), 2.0))
    with pytest.raises(InputError, match="out of range"):
        ex.explain(x, "drise", target=DetectionBoxes([[0, 0, 4, 4]], [3], format="yolo"), masks=2)


def test_drise_on_a_random_weight_yolov8n_onnx_export(torch, tmp_path):
    import onnxruntime as ort

    from agnostic_cam.audit.detections import top_boxes
    from yolo_models import yolov8n_onnx

    path = yolov8n_onnx(tmp_path / "yolov8n.onnx", size=96)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).uniform(0, 1, (1, 3, 96, 96)).astype(np.float32)
    out = sess.run(None, {"images": x})[0]
    assert out.shape == (1, 84, 189)  # 12x12 + 6x6 + 3x3 anchors at 96 px
    b, lab = top_boxes(out, "yolo", 1)[0]  # the model's own best detection
    masks = rise_masks(np.random.default_rng(5), 6, 8, 0.5, (96, 96))
    ex = Explainer.from_onnx(str(path), progress=False)
    got = ex.explain(x, "drise", target=DetectionBoxes(b, lab, format="yolo"), masks=masks)
    onnx_fn = lambda a: sess.run(None, {"images": np.asarray(a, np.float32)[None]})[0].astype(np.float64)  # noqa: E731
    ref = reference(onnx_fn, x, masks, weight_yolo, [b], [lab])
    np.testing.assert_allclose(got.raw, ref, atol=1e-6)
    assert got.heatmap.shape == (1, 96, 96) and np.isfinite(got.heatmap).all()


def test_a_square_yolo_output_is_refused_not_misread():
    """YOLOv8 at 64 px has 84 anchors and 4+80 rows: (N, 84, 84) cannot be read either way."""
    from agnostic_cam.audit.detections import top_boxes
    from agnostic_cam.errors import LayoutError
    from agnostic_cam.methods.drise import similarity

    out = np.random.default_rng(0).uniform(0, 1, (1, 84, 84))
    for fn in (lambda: DetectionBoxes([[0, 0, 4, 4]], [0], format="yolo")(out),
               lambda: similarity(out, "yolo", np.array([[0, 0, 4, 4.0]]), np.array([0])),
               lambda: top_boxes(out, "yolo", 1)):
        with pytest.raises(LayoutError, match="square"):
            fn()


def test_drise_on_a_torchvision_style_onnx_file_with_boxes_labels_scores(torch, heads, tmp_path):
    """A graph with boxes / labels / scores outputs (batch 1), packed by the audit's ModelSpec into
    (N, 100, 6) rows: D-RISE's map equals the paper's, computed from ONNX Runtime's own three outputs."""
    import onnxruntime as ort

    from agnostic_cam.audit.context import ModelSpec
    from agnostic_cam.audit.detections import detector_spec
    from test_audit_tasks import export, head

    class ThreeOutputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):  # one image: its 5 best anchors as boxes (5, 4), labels (5,), scores (5,)
            o = head(torch, x, self.inner.c1, self.inner.c2, self.inner.hd)[0].T
            score, label = o[:, 4:].max(1)
            s, idx = score.topk(5)
            b = o[idx, :4]
            return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1), label[idx], s

    path = export(torch, ThreeOutputs(heads[0]).eval(), tmp_path / "tv.onnx", ["boxes", "labels", "scores"], False)
    spec = detector_spec(ModelSpec(str(path)))
    assert spec.output == "detections" and spec.pack is not None
    ex = spec.build()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(6).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    b, lab, s = sess.run(None, {"images": x})
    masks = rise_masks(np.random.default_rng(7), 8, 4, 0.5, (32, 32))
    got = ex.explain(x, "drise", target=DetectionBoxes(b[:1], lab[:1], format="torchvision"), masks=masks)

    def rows(a):
        bb, ll, ss = sess.run(None, {"images": np.asarray(a, np.float32)[None]})
        return np.concatenate([bb, ss[:, None], ll[:, None]], 1)[None].astype(np.float64)

    ref = reference(rows, x, masks, weight_packed, [b[:1]], [lab[:1]])
    np.testing.assert_allclose(got.raw, ref, atol=1e-6)
    assert np.ptp(ref) > 0
