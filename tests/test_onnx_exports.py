"""ONNX files as today's exporters write them, against the eager float PyTorch model.

Matrix: {ResNet-18, MobileNetV3-Small} x {legacy exporter opset 13 / 17, dynamo exporter (torch's
default, opset 18+), fp16 with fp16 I/O, fp16 with float32 I/O (keep_io_types), int8 dynamic, int8
static QDQ}. Every gradient method the explainer lists runs on each file; CAMs are compared with
the eager model's (``Explainer.from_torch``); every gradient method listed by ``ex.methods`` runs on
each ResNet-18 file, the CAMs, saliency and guided backprop on each MobileNet file. Reduced for time:
random seeded weights, ONE 64 px image, integrated gradients with 4 steps, SmoothGrad with 2
samples, SESS with 2 scales, Score-CAM on three files only and guided Score-CAM (guided backprop
times Score-CAM, both checked on those files) on one; exports are shared through session fixtures.

Tolerances on heatmaps (values in [0, 1]), README "ONNX files" section:
- float32 graphs: max |difference| <= 1e-4 (same arithmetic, different kernels);
- fp16: max |difference| <= FP16_TOL (fp16 rounding of weights and activations);
- int8: Pearson correlation >= INT8_CORR with the float model's heatmap: 0.95 on ResNet-18, 0.5
  on MobileNetV3-Small, whose 2x2 last map under static QDQ (4 random calibration images, random
  weights) moves a lot (XGrad-CAM: 0.72). Quantization changes the model; the twin's distance
  from the shipped graph is what ``describe()`` reports.
The float twin's agreement with the shipped graph is checked to be reported by ``describe()``.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

FLOAT_TOL = 1e-4
FP16_TOL = 2e-2
INT8_CORR = {"resnet18": 0.95, "mobilenet_v3_small": 0.5}  # MobileNet QDQ: 2x2 maps, XGrad-CAM measured 0.72
SIZE = 64
MODELS = {"resnet18": "layer4", "mobilenet_v3_small": "features"}
VARIANTS = ["legacy13", "legacy17", "dynamo", "fp16", "fp16_io32", "int8_dynamic", "int8_qdq"]
CAMS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
FAST = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 2}, "sess": {"num_scales": 2}}
SCORECAM = {("resnet18", "dynamo"), ("resnet18", "fp16_io32"), ("resnet18", "int8_qdq")}
GUIDED_SCORECAM = ("resnet18", "dynamo")  # 512 forward passes; its two parts run on every SCORECAM file


@pytest.fixture(scope="session")
def image():
    return np.random.RandomState(0).randn(1, 3, SIZE, SIZE).astype(np.float32)


@pytest.fixture(scope="session")
def models(torch):
    import torchvision

    out = {}
    for name in MODELS:
        torch.manual_seed(0)
        out[name] = getattr(torchvision.models, name)(weights=None).eval()
    return out


@pytest.fixture(scope="session")
def files(models, tmp_path_factory, torch):
    """Lazily exported files, one per (model, variant), shared by the whole session."""
    root = tmp_path_factory.mktemp("exports")
    cache: dict[tuple[str, str], str] = {}

    def get(model: str, variant: str) -> str:
        key = (model, variant)
        if key not in cache:
            cache[key] = _export(models[model], model, variant, root, get, torch)
        return cache[key]

    return get


def _export(net, name: str, variant: str, root, get, torch) -> str:
    import onnx

    path = str(root / f"{name}_{variant}.onnx")
    x = torch.zeros(1, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant in ("legacy13", "legacy17"):
            torch.onnx.export(net, (x,), path, dynamo=False, opset_version=int(variant[-2:]), input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
        elif variant == "dynamo":
            torch.onnx.export(net, (x,), path, dynamo=True, input_names=["input"], output_names=["logits"])
            assert max(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")) >= 18
        elif variant.startswith("fp16"):
            from onnxruntime.transformers.float16 import convert_float_to_float16

            m = convert_float_to_float16(onnx.load(get(name, "legacy17")), keep_io_types=variant == "fp16_io32")
            onnx.save(m, path)
        elif variant == "int8_dynamic":
            from onnxruntime.quantization import quantize_dynamic

            quantize_dynamic(get(name, "legacy17"), path)
        elif variant == "int8_qdq":
            from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

            class Calibration(CalibrationDataReader):
                def __init__(self):
                    rs = np.random.RandomState(1)
                    self.it = iter([{"input": rs.randn(1, 3, SIZE, SIZE).astype(np.float32)} for _ in range(4)])

                def get_next(self):
                    return next(self.it, None)

            logging.disable(logging.WARNING)  # the quantizer logs advice on the root logger
            try:
                quantize_static(get(name, "legacy17"), path, Calibration(), quant_format=QuantFormat.QDQ)
            finally:
                logging.disable(logging.NOTSET)
    return path


@pytest.fixture(scope="session")
def eager(models, image):
    """The eager float model's explanations, per (model, method), computed once."""
    from agnostic_cam import Explainer

    cache: dict[tuple[str, str], np.ndarray] = {}
    explainers: dict[str, Explainer] = {}  # one per model: its export and checks are made once

    def get(model: str, method: str) -> np.ndarray:
        if (model, method) not in cache:
            if model not in explainers:
                explainers[model] = Explainer.from_torch(models[model], MODELS[model])
            cache[(model, method)] = explainers[model].explain(image, method, target=0, **FAST.get(method, {})).heatmap
        return cache[(model, method)]

    return get


def _gradient_methods(ex) -> list[str]:
    from agnostic_cam.methods import Needs, registry

    reg = registry()
    grad = Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS
    return [m for m in ex.methods if reg[m].needs & grad]


def _check(model: str, variant: str, method: str, got: np.ndarray, want: np.ndarray) -> float:
    if variant.startswith("int8"):
        corr = float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
        assert corr >= INT8_CORR[model], (model, variant, method, corr)
        return corr
    diff = float(np.abs(got - want).max())
    assert diff <= (FP16_TOL if variant.startswith("fp16") else FLOAT_TOL), (model, variant, method, diff)
    return diff


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model", list(MODELS))
def test_export_matrix(model, variant, files, eager, image):
    from agnostic_cam import Explainer

    ex = Explainer.from_onnx(files(model, variant))
    methods = _gradient_methods(ex)
    assert set(CAMS) | {"saliency"} <= set(methods), methods  # the gradient backend handles it
    if model == "resnet18":  # a ReLU network: the rule methods run on every file (QDQ: the twin's explicit ReLUs)
        assert {"guided_backprop", "deconvnet"} <= set(methods), methods
    else:  # every gradient method runs on each ResNet-18 file; MobileNet: the CAMs + saliency
        methods = [*CAMS, "saliency"]
    for method in methods:
        if method == "guided_scorecam" and (model, variant) != GUIDED_SCORECAM:
            continue  # 512 forward passes (4 s on the int8 file); its parts run: guided backprop here, Score-CAM below
        heat = ex.explain(image, method, target=0, **FAST.get(method, {})).heatmap
        assert heat.shape == (1, SIZE, SIZE) and np.isfinite(heat).all(), method
        if method in CAMS:
            _check(model, variant, method, heat, eager(model, method))
    if (model, variant) in SCORECAM:
        _check(model, variant, "scorecam", ex.explain(image, "scorecam", target=0).heatmap, eager(model, "scorecam"))
    text = ex.describe()
    expected = {"fp": "float16", "in": "int8"}.get(variant[:2], "float32")
    assert f"precision: {expected}" in text
    if expected != "float32":  # forward on the shipped graph, gradients on the twin: the distance is reported
        r = ex.adapter.twin_report
        assert r is not None and "twin agreement: max |shipped - twin|" in text
        assert 0 <= r["max_abs_diff"] <= 0.1 * r["max_abs_output"] + 1e-3, r
