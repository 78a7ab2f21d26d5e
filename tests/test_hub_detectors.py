"""Detectors explained from the front door: the automatic layer is the neck output feeding the head.

A detection head reads several feature levels (YOLO's ``Detect`` reads ``model[15]``, ``[18]``,
``[21]``; torchvision's RetinaNet / SSD / Faster R-CNN heads read the FPN or extra-block outputs).
The rule (agnostic_cam/adapters/auto_layer.py) picks the coarsest level the head reads with more than
one position: the most semantic, the one pytorch-grad-cam's YOLO tutorial explains (``model[-2]``);
never a convolution inside the head (a per-level class / box branch). Checked here independently:
hooks on the head record which maps it reads, and the picked layer's output must be the coarsest of
them. YOLO's maps equal pytorch-grad-cam's at that layer, and its ONNX export picks the same tensor.

Reduced for time: random seeded weights (weights=None, weights_backbone=None; YOLO from its yaml),
3 classes for torchvision, inputs of 128 px (torchvision's transform is told min_size=max_size=128;
SSDlite keeps its fixed 320 px), one or two images.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from agnostic_cam import Explainer  # noqa: E402

SIDE = 128


def score(y):
    """The explained score of a YOLO prediction (N, 4 + classes, anchors): all class confidences (NumPy or torch)."""
    return y[:, 4:, :].sum(axis=(1, 2))


def levels_and_pick(model, head_name: str, layer: str, x) -> tuple[list, object]:
    """(the rank-4 maps module ``head_name`` reads as its first argument that some module returns (a level
    made by a functional op, as Faster R-CNN's max-pooled 'pool' level, is no layer), ``layer``'s output)."""
    mods, levels, store, made = dict(model.named_modules()), [], [], []

    def pre(m, args):
        first = args[0]
        levels.extend(t for t in (first.values() if isinstance(first, dict) else first)
                      if isinstance(t, torch.Tensor) and t.ndim == 4)

    hooks = [mods[head_name].register_forward_pre_hook(pre),
             mods[layer].register_forward_hook(lambda m, i, o: store.append(o))]
    hooks += [m.register_forward_hook(lambda m, i, o: made.append(o)) for m in mods.values()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [t for t in levels if any(t is o for o in made)], store[-1]


def assert_coarsest_level(model, ex, head_name, x):
    levels, picked = levels_and_pick(model, head_name, ex.layer, x)
    assert any(picked is t for t in levels), f"{ex.layer} is not a map the head {head_name} reads"
    spatial = [t.shape[2] * t.shape[3] for t in levels if t.shape[2] * t.shape[3] > 1]
    assert picked.shape[2] * picked.shape[3] == min(spatial)
    assert not ex.layer.startswith(head_name)
    described = "\n".join(ex.adapter.describe_lines())  # (ex.describe() also lists methods: it exports the model)
    assert "picked automatically: the coarsest of the feature levels the detection head reads" in described


@pytest.fixture(scope="module")
def yolo():
    from yolo_models import yolov8n_random

    return yolov8n_random(0)


def test_yolo_picks_the_neck_output_feeding_detect(yolo, tmp_path):
    import pytorch_grad_cam as pgc

    from test_hub_models import Selected, eigen_up_to_sign

    ex = Explainer.from_torch(yolo, input_shape=(3, SIDE, SIDE), output=0, progress=False)
    x = np.random.default_rng(0).normal(size=(2, 3, SIDE, SIDE)).astype(np.float32)
    assert ex.layer == "model.21"  # the coarsest of Detect's inputs model[15], [18], [21]; never a branch in model.22
    assert_coarsest_level(yolo, ex, "model.22", torch.from_numpy(x[:1]))
    assert "head: model.22" in "\n".join(ex.adapter.describe_lines())

    ref_model, layer = Selected(yolo, 0), yolo.model[-2]  # pytorch-grad-cam's YOLO recipe: model[-2]
    got = ex.explain(x, "gradcam", target=score)
    with pgc.GradCAM(model=ref_model, target_layers=[layer]) as cam:
        ref = cam(input_tensor=torch.from_numpy(x), targets=[lambda y: y[4:, :].sum()] * len(x))
    assert np.abs(got.heatmap - ref).max() <= 1e-4 and got.heatmap.std() > 0
    eig = ex.explain(x, "eigencam", target=score).heatmap
    with pgc.EigenCAM(model=ref_model, target_layers=[layer]) as cam:
        ref = cam(input_tensor=torch.from_numpy(x), targets=None)
    assert eigen_up_to_sign(eig, ex, x, ref, score) <= 1e-4

    path = tmp_path / "yolo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ref_model.eval(), (torch.zeros(1, 3, SIDE, SIDE),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    onnx_ex = Explainer.from_onnx(path)
    assert "/model.21/" in onnx_ex.adapter.layer.node and "/model.22/" not in onnx_ex.adapter.layer.node
    assert "the coarsest of the feature levels the detection head reads" in onnx_ex.describe()
    onnx_eig = onnx_ex.explain(x[:1], "eigencam", target=score).heatmap
    assert np.abs(onnx_eig - ex.explain(x[:1], "eigencam", target=score).heatmap).max() <= 1e-4


@pytest.mark.parametrize("arch, head", [("fasterrcnn_mobilenet_v3_large_fpn", "rpn"),
                                        ("retinanet_resnet50_fpn", "head"),
                                        ("ssdlite320_mobilenet_v3_large", "head")])
def test_torchvision_detectors_pick_a_neck_level(arch, head):
    from torchvision.models import detection

    torch.manual_seed(0)
    kw = {} if arch.startswith("ssd") else dict(min_size=SIDE, max_size=SIDE)
    model = getattr(detection, arch)(weights=None, weights_backbone=None, num_classes=3, **kw).eval()
    side = 320 if arch.startswith("ssd") else SIDE
    # no options, as a user calls it: the resolver's 224 px probe is resized to the detector's own size by its
    # transform (min_size / SSD's 320), and without input_shape there is no export (this test runs no
    # forward method; the export was 1-3 s of each case)
    ex = Explainer.from_torch(model, progress=False)
    assert ex.layer.startswith("backbone.")  # the neck (FPN, SSD's extra blocks): never inside a head
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, side, side)).astype(np.float32))
    assert_coarsest_level(model, ex, "rpn.head" if head == "rpn" else head, x)
