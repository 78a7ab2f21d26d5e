"""The ``agnostic-cam`` command line's arguments: the parser of ``layers``, ``explain``, ``audit`` and ``compare``
(the commands themselves are in :mod:`agnostic_cam.cli`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from agnostic_cam._version import __version__


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}") from None


def _size(text: str):
    if text.lower() == "none":
        return "none"
    try:
        vals = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"--size takes H,W (e.g. 224,224), one int, or 'none'; got {text!r}")
    return (vals[0], vals[-1])


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return v


def _class_index(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a class index >= 0; got {text!r}")
    return v


AUDIT_METHODS = "scorecam"  # the audit's default --methods


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected one image's shape as three positive ints, e.g. 3,224,224; got {text!r}")
    return dims


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="the .onnx file")
    p.add_argument("--layer", help="target tensor name (see `agnostic-cam layers`); default: the last feature "
                                   "map before global pooling")
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="input layout (default: detected from the input shape)")
    p.add_argument("--output", help="graph output to explain (name), or 'logits' to explain the input of a final Softmax")
    p.add_argument("--input-name", help="the graph input that takes the images, when the model has several")
    p.add_argument("--providers", help="comma-separated ONNX Runtime providers (default: CUDA when available, CPU)")
    p.add_argument("--batch-size", type=_positive, help="rows per ONNX Runtime call")


def _prep_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocessing (defaults: the model's input size and layout, RGB, 0-1, no mean/std)")
    g.add_argument("--preprocess", type=Path, help="JSON or YAML file with fields size, channel_order, scale, mean, std")
    g.add_argument("--size", type=_size, help="resize images to H,W; 'none' keeps them as they are")
    g.add_argument("--bgr", action="store_true", help="the model takes BGR channel order")
    g.add_argument("--scale", help="'0-1' (default), '0-255' or a multiplier of the 0-255 values")
    g.add_argument("--mean", type=_floats, help="per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406")
    g.add_argument("--std", type=_floats, help="per-channel std dividing after the mean, e.g. 0.229,0.224,0.225")


def _method_help() -> str:
    """The registered methods, one line each with the options they take."""
    from agnostic_cam.methods import registry
    from agnostic_cam.methods.base import method_options

    lines = [f"  {name:<22} {', '.join(method_options(cls)) or '-'}" for name, cls in sorted(registry().items())]
    return "methods (name, options):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agnostic-cam", description="Explain and audit image classifiers in ONNX "
                                     "format: list target layers, write heatmaps, audit a folder with a report.",
                                     epilog=_method_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"agnostic-cam {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details too")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("layers", help="list candidate target layers of an ONNX model",
                       description="List the tensors that can be explained: name, op, shape, layout, node.")
    _model_args(p)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p = sub.add_parser("explain", help="write heatmap overlays for some images",
                       description="Explain images with one method; writes <image>_<method>.png overlays to --out.",
                       epilog=_method_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(p)
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--method", default="scorecam", help="method name (default scorecam; the list is below)")
    p.add_argument("--target", type=_class_index, help="class index to explain (default: the top-1 prediction)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _prep_args(p)
    p = sub.add_parser("embed", help="write an ONNX file that also returns its saliency map",
                       description="Write a copy of the model whose outputs are its own plus 'saliency' (N, H, W) in "
                       "[0, 1] and 'saliency_raw' at the layer's resolution (docs/embed.md); it runs on plain ONNX "
                       "Runtime. Methods: cam, gradcam (global-average-pool + linear heads), activation_map, eigencam, "
                       "reciprocam, vit_reciprocam.")
    _model_args(p)
    p.add_argument("--method", default="cam", help="embeddable method (default cam)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the ONNX file to write")
    p.add_argument("--per-class", action="store_true", help="also output 'saliency_per_class' (N, K, h, w)")
    p.add_argument("--input-shape", type=_shape, help="one image's shape, e.g. 3,224,224, for a file whose input "
                                                      "size is not fixed")
    p = sub.add_parser("audit", help="audit a folder of images: report.html, metrics.csv, results.json",
                       description="Explain every image of a folder with several methods, score the maps' "
                       "faithfulness and write report.html, metrics.csv and results.json to --out. Re-running "
                       "resumes: finished images are not recomputed.",
                       epilog=_method_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(p)
    p.add_argument("image_dir", type=Path, help="folder of images, a folder tree (sub-folder = label) or a .txt/.csv "
                                                "list of image paths")
    p.add_argument("--methods", default=AUDIT_METHODS, help="comma-separated method names (default scorecam; the "
                                                            "list is below)")
    p.add_argument("--target", type=_class_index, help="class index to explain for every image (default: top-1)")
    p.add_argument("--embedded", action="store_true", help="score the model's own 'saliency' output (a file from "
                   "`agnostic-cam embed`) as method 'embedded'; a file with that output and no --methods uses it alone")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--steps", type=_positive, default=20, help="steps of the deletion/insertion curves (default 20)")
    p.add_argument("--boxes", type=Path, help="JSON {file name: [y0, x0, y1, x1] or a list of boxes} for the pointing game; "
                   "with --task detect: {file name: [{\"box\": [x1, y1, x2, y2], \"label\": k}, ...]}, the boxes to explain")
    p.add_argument("--ground-truth", type=Path, help="object boxes or masks, matched to the images by file name: a COCO "
                   ".json, or a folder of YOLO .txt, Pascal VOC .xml or mask images (docs/ground-truth.md); with --task "
                   "detect, each box is matched to a detection (same class, highest IoU >= --iou) and scored")
    p.add_argument("--metrics", help="metric groups, comma-separated: faithfulness, localisation (needs "
                   "--ground-truth), complexity (default: faithfulness, plus localisation with --ground-truth)")
    g = p.add_argument_group("tasks beyond classification (README: 'Audit a segmenter or a detector')")
    g.add_argument("--task", choices=["classify", "segment", "detect", "multilabel"], default="classify",
                   help="classify (default); segment: a segmenter's (N, K, H, W) output, with --class and optional "
                        "--masks; detect: a YOLO-style head or boxes/labels/scores outputs, with --boxes, --top-boxes or "
                        "--ground-truth; multilabel: every present class (--threshold or --present), scored per "
                        "(image, class)")
    g.add_argument("--threshold", type=float, default=0.5, help="--task multilabel: a class is present when its "
                   "probability (sigmoid of a logit) is >= this (default 0.5)")
    g.add_argument("--present", type=Path, help="--task multilabel: JSON {file name: [class index, ...]}, each image's "
                   "classes (ground truth) instead of --threshold")
    g.add_argument("--class", dest="category", type=_class_index, help="--task segment: the class to explain")
    g.add_argument("--masks", type=Path, help="--task segment: folder of PNG masks named like the images (nonzero = "
                                              "the region; default: the whole image)")
    g.add_argument("--top-boxes", type=_positive, help="--task detect: explain the model's own N best boxes")
    g.add_argument("--iou", type=float, default=0.5, help="--task detect: IoU a prediction needs to match a box "
                                                          "(default 0.5)")
    p.add_argument("--labels", type=Path, help="text file of class names, one per line")
    p.add_argument("--score", choices=["auto", "softmax", "raw"], default="auto",
                   help="probabilities for the metrics: softmax of the outputs, or the outputs as they are ('raw'); "
                        "'auto' (default) uses them as they are when the model ends in a Softmax")
    p.add_argument("--no-resume", action="store_true", help="recompute every image even if finished before")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--follow-symlinks", action="store_true", help="read symbolic links that lead outside the folder")
    p.add_argument("--max-pixels", type=_positive, help="refuse images with more pixels (default: Pillow's limit, ~89 M)")
    p.add_argument("--batch-images", type=_positive, default=8, help="images explained together (default 8)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="where images run: this process "
                   "(default) or Ray Data actors (needs the [ray] extra)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=_positive, help="parallel workers: Ray actors, or local reader threads")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per Ray actor (default 0)")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv", help="per-image metrics as metrics.csv "
                   "(default) or metrics.parquet (large runs; results.json then holds the summary only)")
    p.add_argument("--sanity", action="store_true", help="also run the model-randomisation sanity check of every "
                   "method on a few images (sanity.json, a report table; methods whose maps barely change are flagged)")
    p.add_argument("--sanity-images", type=_positive, default=4, help="images for --sanity (default 4)")
    p.add_argument("--report-images", type=int, default=200, help="images shown in report.html (a sample: best and "
                   "worst per method, then random); every image is in the summary (default 200)")
    _prep_args(p)
    _compare_args(sub)
    return parser


def _share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a share of pixels in (0, 1], e.g. 0.1; got {text!r}")
    return v


def _compare_args(sub) -> None:
    p = sub.add_parser("compare", help="compare the explanations of two or more models: report.html, compare.csv, "
                       "results.json", description="Explain the same images with every model (ONNX files, Keras "
                       "files, or module:factory for PyTorch / Keras models built in Python) and report how far "
                       "their heatmaps and predictions are apart, the worst-agreeing images first. Re-running "
                       "resumes: finished images are not recomputed.",
                       epilog=_method_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="MODEL_OR_IMAGES",
                   help="A B [C ...] IMAGES: two or more models (.onnx, .keras/.h5, module:factory), then a folder "
                        "of images or a .txt/.csv list")
    p.add_argument("--methods", default="gradcam", help="comma-separated method names (default gradcam)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--layer", help="target layer name, when every model names it the same (default: each model's own)")
    p.add_argument("--size", type=_size, help="resize images to H,W (default: the first model's fixed input size)")
    p.add_argument("--target", type=_class_index, help="class index to explain (default: the first model's top-1)")
    p.add_argument("--top", type=_share, default=0.1, help="share of pixels whose overlap (IoU) is measured "
                                                           "(default 0.1)")
    p.add_argument("--walk", action="store_true", help="two models of one architecture: also walk their layers and "
                                                      "name the first where activations split")
    p.add_argument("--tol", type=float, default=1e-3, help="--walk: relative activation difference that counts as a "
                                                         "split (default 1e-3)")
    p.add_argument("--batch-images", type=_positive, default=8, help="images compared together (default 8)")
    p.add_argument("--no-resume", action="store_true", help="recompute every image even if finished before")
    p.add_argument("--follow-symlinks", action="store_true", help="read symbolic links that lead outside the folder")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="where images run: this process "
                   "(default) or Ray Data actors that each load the models (needs the [ray] extra)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=_positive, help="Ray actors (default: one per 2 CPUs)")
