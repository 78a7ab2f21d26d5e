"""The ``agnostic-cam`` command: ``layers``, ``explain``, ``embed`` and ``audit`` for ONNX models; ``compare``
for two or more models (ONNX, Keras files, PyTorch / Keras through module:factory).

Exit codes: 0 success; 1 the audit finished but some images could not be used (listed in the
report); 2 bad usage, options or model (one line says what to change; no image was run);
3 an output file could not be written (disk full, permissions); 130 interrupted (Ctrl-C: the
report of the images done so far is written, a rerun resumes).
"""
from __future__ import annotations

import json
import logging
import sys

from agnostic_cam.cli_parser import AUDIT_METHODS, build_parser  # noqa: F401 - build_parser: part of the CLI's API
from agnostic_cam.errors import AgnosticCamError, InputError, OptionError

log = logging.getLogger("agnostic_cam.cli")

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _explainer(args):
    from agnostic_cam import Explainer

    providers = args.providers.split(",") if args.providers else None
    return Explainer.from_onnx(args.model, target_layer=args.layer, layout=args.layout, output=args.output,
                               input_name=args.input_name, providers=providers, batch_size=args.batch_size,
                               progress=False)


def _preprocess(args, adapter):
    from agnostic_cam.inputs.preprocess import Preprocess, _parse_json_or_yaml

    given = {}
    if args.preprocess is not None:
        try:
            given = _parse_json_or_yaml(args.preprocess.read_text(), args.preprocess)
        except OSError as e:
            raise OptionError(f"cannot read --preprocess {args.preprocess}: {e.strerror}") from None
    flags = {"size": None if args.size == "none" else args.size, "channel_order": "BGR" if args.bgr else None,
             "scale": args.scale, "mean": args.mean, "std": args.std}
    try:
        flags["scale"] = float(args.scale)
    except (TypeError, ValueError):
        pass
    given.update({k: v for k, v in flags.items() if v is not None})
    pre = Preprocess.for_adapter(adapter, **given)
    if args.size == "none":
        pre.size = None
    return pre


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], marks: list[str] | None = None) -> str:
    """A plain-text table, columns as wide as their widest cell (``str.ljust``; no dependency is
    worth a five-column listing). ``marks``: one character per row shown before it."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda mark, cells: (mark + " " + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))).rstrip()  # noqa: E731
    return "\n".join([line(" ", header), *(line(m, r) for m, r in zip(marks or [" "] * len(rows), rows))])


def cmd_layers(args) -> int:
    ex = _explainer(args)
    layers = ex.layers()
    if args.json:
        sys.stdout.write(json.dumps([{"tensor": ly.name, "op": ly.op_type, "shape": list(ly.shape), "layout": ly.layout,
                                      "node": ly.node, "default": ly.name == ex.layer} for ly in layers], indent=1) + "\n")
        return EXIT_OK
    rows = [(ly.name, ly.op_type, "x".join(str(d) for d in ly.shape), ly.layout, ly.node) for ly in layers]
    sys.stdout.write(f"model input {ex.adapter.input_name!r} {ex.adapter.input_shape} layout {ex.adapter.layout}"
                     f"{' (detected)' if ex.adapter.layout_detected else ''}; explained output "
                     f"{ex.adapter.output_name!r}\n")
    sys.stdout.write(table(("tensor", "op", "shape", "layout", "node"), rows,
                           ["*" if r[0] == ex.layer else " " for r in rows]) + "\n")
    sys.stdout.write(f"* default target layer: {ex.layer}\n")
    return EXIT_OK


def cmd_explain(args) -> int:
    from PIL import Image

    from agnostic_cam.audit.files import atomic_write, check_writable

    ex = _explainer(args)
    pre = _preprocess(args, ex.adapter)
    check_writable(args.out)
    from agnostic_cam.audit.record import display_copy, overlay_at
    from agnostic_cam.inputs.image_files import read_image

    for path in args.images:
        rgb = pre.load(path)
        e = ex.explain(pre.to_batch([rgb]), args.method, target=args.target)
        dst = args.out / f"{path.stem}_{args.method.replace('+', 'p')}.png"
        import io

        buf = io.BytesIO()  # the overlay at the image's own aspect ratio, not squashed to the model's input
        Image.fromarray(overlay_at(display_copy(read_image(path)), e.heatmap[0])).save(buf, format="PNG")
        atomic_write(dst, buf.getvalue())
        log.info("%s: class %d score %.4g -> %s", path, int(e.targets[0]), float(e.scores[0]), dst)
    return EXIT_OK


def cmd_embed(args) -> int:
    from agnostic_cam.audit.files import write_error

    ex = _explainer(args)
    model = ex.embed(None, args.method, per_class=args.per_class, input_shape=args.input_shape)
    try:
        from agnostic_cam.embed import save

        save(model, args.out)
    except OSError as e:
        raise write_error(args.out, e) from None
    log.info("%s at %s -> %s (outputs: the model's own, saliency, saliency_raw)", args.method, ex.layer, args.out)
    return EXIT_OK


def cmd_audit(args) -> int:
    from agnostic_cam import audit
    from agnostic_cam.audit.context import check_boxes

    if args.sanity and args.task != "classify":
        raise OptionError("--sanity explains class scores; it does not run with --task segment/detect yet (drop --sanity)")
    boxes = None
    if args.boxes is not None:
        try:
            boxes = json.loads(args.boxes.read_text())
            boxes = boxes if args.task == "detect" else check_boxes(boxes)
        except (OSError, ValueError) as e:
            raise OptionError(f"cannot use --boxes {args.boxes}: {e}") from None
    try:
        labels = args.labels.read_text(encoding="utf-8-sig").splitlines() if args.labels else None
        while labels and not labels[-1].strip():  # a trailing empty line is not a class
            labels.pop()
    except OSError as e:
        raise OptionError(f"cannot read --labels {args.labels}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"--labels {args.labels} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                         f"{e.start}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8") from None
    present = None
    if args.present is not None:
        try:
            present = json.loads(args.present.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OptionError(f"cannot use --present {args.present}: {e}") from None
    explainer = _explainer(args)
    pre = _preprocess(args, explainer.adapter)
    from agnostic_cam.audit.embedded import methods_for

    methods = methods_for(args.methods, args.embedded, args.model, AUDIT_METHODS)
    res = audit.run(args.model, args.image_dir, args.out, methods, engine=args.engine, workers=args.workers,
                    address=args.address, gpus_per_worker=args.gpus_per_worker, preprocess=pre, layer=args.layer,
                    layout=args.layout, output=args.output, input_name=args.input_name, providers=args.providers,
                    batch_size=args.batch_size, steps=args.steps, target=args.target, boxes=boxes, labels=labels,
                    resume=not args.no_resume, score=args.score, batch_images=args.batch_images,
                    max_pixels=args.max_pixels, follow_symlinks=args.follow_symlinks, format=args.format,
                    report_images=args.report_images, progress=False if args.no_progress else None,
                    explainer=explainer, task=args.task, category=args.category, masks=args.masks,
                    top_boxes=args.top_boxes, iou=args.iou, ground_truth=args.ground_truth, metrics=args.metrics,
                    threshold=args.threshold, present=present)
    if args.sanity:
        from agnostic_cam.audit.sanity_check import run_sanity

        run_sanity(explainer, pre, args.image_dir, [m.strip() for m in args.methods.split(",") if m.strip()],
                   args.out, n_images=args.sanity_images, follow_symlinks=args.follow_symlinks)
    run = res["run"]
    log.info("explained %d images, %d failed (%d files processed now, %d reused from a previous run) -> %s",
             run["explained"], len(run["failed"]), len(run["computed"]), len(run["reused"]), args.out / "report.html")
    for f in run["failed"]:
        log.warning("  could not use %s: %s", f["file"], f["error"])
    return EXIT_SOME_FAILED if run["failed"] else EXIT_OK


def cmd_compare(args) -> int:
    from agnostic_cam.compare.command import run_compare

    if len(args.inputs) < 3:
        raise OptionError(f"compare takes two or more models and then the images (A B [C ...] IMAGES); got "
                          f"{len(args.inputs)} argument(s)")
    res = run_compare(args.inputs[:-1], args.inputs[-1], args.out, args.methods, layer=args.layer, size=args.size,
                      target=args.target, top=args.top, resume=not args.no_resume, batch_images=args.batch_images,
                      walk=args.walk, tol=args.tol, follow_symlinks=args.follow_symlinks, engine=args.engine,
                      workers=args.workers, address=args.address)
    run = res["run"]
    log.info("compared %d images, %d failed (%d computed now, %d reused from a previous run) -> %s", run["explained"],
             len(run["failed"]), len(run["computed"]), len(run["reused"]), args.out / "report.html")
    for f in run["failed"]:
        log.warning("  could not use %s: %s", f["file"], f["error"])
    return EXIT_SOME_FAILED if run["failed"] else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``agnostic-cam`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    from agnostic_cam.audit.files import OutputError

    try:
        return {"layers": cmd_layers, "explain": cmd_explain, "embed": cmd_embed, "audit": cmd_audit,
                "compare": cmd_compare}[args.command](args)
    except KeyboardInterrupt as e:
        msg = str(e) if str(e) else "interrupted before any image was finished; rerun the same command to resume"
        log.error("agnostic-cam %s: %s", args.command, msg)
        return EXIT_INTERRUPTED
    except OutputError as e:
        log.error("agnostic-cam %s: error: %s", args.command, e)
        return EXIT_WRITE
    except AgnosticCamError as e:  # anything else is a bug and keeps its traceback
        log.error("agnostic-cam %s: error: %s", args.command, e)
        return EXIT_USAGE


def setup_logging(level: int) -> None:
    """Messages of the ``agnostic_cam`` loggers to stderr, bare (the command's data goes to stdout)."""
    logger = logging.getLogger("agnostic_cam")
    if not any(getattr(h, "_agnostic_cam_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._agnostic_cam_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    for h in logger.handlers:
        if getattr(h, "_agnostic_cam_cli", False):
            h.stream = sys.stderr  # the current stderr (tests capture it)
    logger.setLevel(level)
    logger.propagate = False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
