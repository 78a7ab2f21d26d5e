"""What every image of one audit shares: settings, the explainer, fingerprints, checks done once.

:class:`AuditConfig` holds the settings; :class:`Context` adds the explainer, the preprocessing,
the score kind (softmax of logits, or probabilities as they are) and the run's fingerprint. A
context is rebuilt from :meth:`Context.spec` in each Ray actor, so engines share one definition.
:func:`preflight` checks everything that is not an image's fault before any image runs.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from agnostic_cam.errors import AgnosticCamError, BackendError, InputError, ModelError, NonFiniteError, OptionError

SCORES = ("auto", "softmax", "raw")


@dataclass
class AuditConfig:
    """Audit settings. ``score``: 'auto' (probabilities as they are when the model ends in Softmax,
    else softmax of the outputs), 'softmax' or 'raw'. ``batch_images``: images explained together."""

    methods: list[str]
    steps: int = 20
    target: int | None = None
    boxes: dict[str, list] = field(default_factory=dict)
    labels: list[str] | None = None
    resume: bool = True
    score: str = "auto"
    batch_images: int = 8
    max_pixels: int | None = None
    follow_symlinks: bool = False
    task: dict | None = None  # --task segment / detect settings (audit/tasks.py make_task); None: classify
    ground_truth: str | None = None  # --ground-truth PATH (audit/ground_truth.py)
    metrics: list[str] | None = None  # --metrics groups (audit/localise.py); None: the default for the run

    def __post_init__(self):
        if isinstance(self.methods, str):
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        self.methods = list(dict.fromkeys(self.methods))
        if not self.methods:
            raise OptionError("no methods given; e.g. methods=['scorecam', 'gradcam'] (--methods scorecam,gradcam)")
        for name, v, lo in (("steps", self.steps, 1), ("batch_images", self.batch_images, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise OptionError(f"{name} must be an int >= {lo}; got {v!r}")
        if self.target is not None and (isinstance(self.target, bool) or not isinstance(self.target, (int, np.integer))
                                        or self.target < 0):
            raise OptionError(f"target must be a class index >= 0 (or None for the top-1 class); got {self.target!r}")
        if self.score not in SCORES:
            raise OptionError(f"score must be one of {SCORES}; got {self.score!r}")
        if self.max_pixels is not None and (not isinstance(self.max_pixels, (int, np.integer)) or self.max_pixels < 1):
            raise OptionError(f"max_pixels must be a positive int; got {self.max_pixels!r}")
        self.boxes = check_boxes(self.boxes)
        from agnostic_cam.audit.localise import metric_groups

        if self.ground_truth is not None:
            if self.task and self.task["task"] != "detect":
                raise OptionError("--ground-truth scores classification and detection maps; drop it with --task segment "
                                  "(use --masks for the segment audit's regions)")
            self.ground_truth = os.fspath(self.ground_truth)
        self.metrics = metric_groups(self.metrics, self.ground_truth)
        if self.labels is not None:
            self.labels = [str(v) for v in self.labels]


def check_boxes(boxes) -> dict[str, list]:
    """{file name: [y0, x0, y1, x1] or a list of such boxes}, validated (OptionError otherwise)."""
    if boxes is None:
        return {}
    if not isinstance(boxes, dict):
        raise OptionError(f"boxes must be a JSON object {{file name: [y0, x0, y1, x1] or a list of boxes}}; got a "
                          f"{type(boxes).__name__}")
    for name, b in boxes.items():
        arr = b if isinstance(b, list) and b and isinstance(b[0], list) else [b]
        for box in arr:
            ok = (isinstance(box, list) and len(box) == 4
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box))
            if not ok or box[0] >= box[2] or box[1] >= box[3] or min(box) < 0:
                raise OptionError(f"box of {name!r} must be [y0, x0, y1, x1] numbers >= 0 with y0 < y1 and x0 < x1; "
                                  f"got {box!r}")
    return boxes


def model_fingerprint(path: str | os.PathLike) -> str:
    """Hash of an ONNX file and of every external-data file it references (weights stored beside it)."""
    import onnx

    path = Path(path)
    h = hashlib.blake2b(digest_size=16)
    try:
        h.update(path.read_bytes())
        proto = onnx.load(str(path), load_external_data=False)
    except OSError as e:
        raise OptionError(f"cannot read the model {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - protobuf raises many types; the explainer reports it precisely
        raise ModelError(f"not a readable ONNX model {path} ({type(e).__name__}: {e})") from None
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node for a in n.attribute if a.HasField("t")]
    locations = sorted({e.value for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL
                        for e in t.external_data if e.key == "location"})
    for loc in locations:
        f = path.parent / loc
        h.update(loc.encode())
        try:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        except OSError as e:
            raise OptionError(f"the model's external weights file {f} cannot be read: {e.strerror or e}") from None
    return h.hexdigest()


def detect_score(explainer, score: str = "auto") -> str:
    """'raw' when the explained output already is a probability (a final Softmax), else 'softmax'.

    A final LogSoftmax gives 'softmax': the softmax of log-probabilities is the probabilities."""
    if score != "auto":
        return score
    final = getattr(explainer.adapter, "final_softmax", None)
    return "raw" if final is not None and final() == "Softmax" else "softmax"


@dataclass
class ModelSpec:
    """How to build the explainer (picklable, so every Ray actor builds its own)."""

    model: str
    layer: str | None = None
    layout: str | None = None
    output: str | None = None
    input_name: str | None = None
    providers: list[str] | None = None
    batch_size: int | None = None
    pack: tuple[str, str, str] | None = None  # torchvision-style (boxes, labels, scores) outputs packed as one

    def build(self):
        from agnostic_cam import Explainer

        model = self.model
        if self.pack is not None:
            import onnx

            from agnostic_cam.audit.detections import packed

            model = packed(onnx.load(self.model), tuple(self.pack))
        return Explainer.from_onnx(model, target_layer=self.layer, layout=self.layout, output=self.output,
                                   input_name=self.input_name, providers=self.providers, batch_size=self.batch_size,
                                   progress=False)


class Context:
    """Explainer + preprocessing + settings of one audit; ``fingerprint`` changes when any of them does."""

    def __init__(self, explainer, preprocess, config: AuditConfig, model_hash: str, model_spec: ModelSpec | None = None):
        self.ex, self.pre, self.cfg, self.model_spec, self.model_hash = explainer, preprocess, config, model_spec, model_hash
        self.on_step = None  # progress callback (image keys, method) set by the runner; never part of spec()
        self.pool = None  # the local engine's thread pool, where record._compute encodes PNGs; never part of spec()
        self.score = "raw" if config.task else detect_score(explainer, config.score)
        self.task_compute = None
        self.ground_truth = None
        if config.ground_truth:
            from agnostic_cam.audit.ground_truth import GroundTruth

            self.ground_truth = GroundTruth(config.ground_truth)
            if config.task and self.ground_truth.format == "masks":
                raise OptionError(f"--task detect scores each ground-truth box: --ground-truth {config.ground_truth} "
                                  "holds mask images, not boxes (give COCO JSON, YOLO .txt or Pascal VOC .xml labels)")
        if config.task:
            from agnostic_cam.audit import multilabel, task_records
            from agnostic_cam.audit.tasks import settings

            self.task_compute = multilabel.compute if config.task["task"] == "multilabel" else task_records.compute
        self.settings = {"layer": explainer.layer, "output": explainer.adapter.output_name, "methods": config.methods,
                         "steps": config.steps, "target": config.target, "preprocess": preprocess.to_dict(),
                         "boxes": config.boxes, "labels": config.labels, "score": self.score,
                         "max_pixels": config.max_pixels}
        if config.ground_truth or config.metrics != ["faithfulness"]:  # earlier fingerprints stay as they were
            self.settings.update(ground_truth=config.ground_truth, metrics=config.metrics)
        if config.task:
            self.settings["task"] = settings(config.task)
        h = hashlib.sha256(model_hash.encode())
        h.update(json.dumps(self.settings, sort_keys=True).encode())
        self.fingerprint = h.hexdigest()[:16]

    def spec(self) -> dict:
        """Everything needed to rebuild this context elsewhere (a Ray actor)."""
        if self.model_spec is None:
            raise OptionError("the Ray engine needs the model as an ONNX file path (each worker loads it)")
        return {"model": asdict(self.model_spec), "preprocess": self.pre.to_dict(), "config": asdict(self.cfg),
                "model_hash": self.model_hash}

    @classmethod
    def from_spec(cls, spec: dict) -> Context:
        from agnostic_cam.inputs.preprocess import Preprocess

        ms = ModelSpec(**spec["model"])
        return cls(ms.build(), Preprocess.from_dict(spec["preprocess"]), AuditConfig(**spec["config"]),
                   spec["model_hash"], ms)

    def label(self, k: int) -> str:
        labels = self.cfg.labels
        return labels[k] if labels and 0 <= k < len(labels) else str(k)


def preflight(ctx: Context) -> None:
    """Check once, before any image, what would otherwise fail on every image: method names, the
    target class, gradient support. Raises OptionError/ModelError/BackendError (exit 2)."""
    from agnostic_cam.methods import get_method

    from agnostic_cam.audit import embedded

    ex = ctx.ex
    if embedded.EMBEDDED in ctx.cfg.methods:
        embedded.check(ctx)
    for m in ctx.cfg.methods:
        if m == embedded.EMBEDDED:
            continue
        try:
            mcls = get_method(m)
        except ValueError as e:
            raise OptionError(str(e)) from None
        if m not in ex.methods and not mcls.detection_only:  # drise: a detector's boxes, checked by the task
            hint = getattr(ex.adapter, "gradient_hint", "")
            raise OptionError(f"method {m!r} cannot run on this model; available: {', '.join(ex.methods)}"
                              + (f". {hint}" if hint else ""))
    size = ctx.pre.size or (tuple(ex.adapter.spatial) if ex.adapter.spatial and None not in ex.adapter.spatial
                            else (64, 64))
    probe = ctx.pre.to_batch([np.full((*size, 3), 127, np.uint8)])
    try:
        out = ex.predict(probe)
    except InputError:
        raise
    except (AgnosticCamError, ValueError, RuntimeError) as e:
        raise ModelError(f"the model does not run on a {size[0]}x{size[1]} image: {e}") from None
    if out.ndim != 2 and not ctx.cfg.task:
        raise ModelError(f"the explained output has shape {out.shape}; the audit needs class scores (N, K). Choose "
                         "another output (--output)")
    if not np.isfinite(out).all():
        raise NonFiniteError(f"the model outputs NaN/Inf on a plain grey {size[0]}x{size[1]} image: its weights or "
                             "graph produce non-finite numbers; no image was audited", where="model output")
    if ctx.cfg.task:
        from agnostic_cam.audit.tasks import preflight as task_preflight

        return task_preflight(ctx, probe, out)
    k = out.shape[1]
    if ctx.cfg.target is not None and ctx.cfg.target >= k:
        raise OptionError(f"target {ctx.cfg.target} is out of range: the model has {k} classes (0-{k - 1})")
    labels = ctx.cfg.labels
    if labels is not None and len(labels) != k:
        raise OptionError(f"the labels file has {len(labels)} class names but the model has {k} classes; give one "
                          f"name per line for classes 0-{k - 1}, in order (blank lines count; none may be missing "
                          "or extra)")
    from agnostic_cam.core.capture import Needs

    grads = Needs.LAYER_GRADIENTS | Needs.INPUT_GRADIENTS
    for m in ctx.cfg.methods:  # gradient methods: convert the graph once, here, not per image
        if m != embedded.EMBEDDED and get_method(m).needs & grads:
            try:
                ex.explain(probe, m, target=0)
            except InputError:
                raise
            except (AgnosticCamError, ValueError, RuntimeError, ImportError, NotImplementedError, KeyError) as e:
                raise BackendError(f"method {m!r} cannot run on this model: {e}") from None
