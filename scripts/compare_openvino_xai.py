"""Recipro-CAM and ViT-ReciproCAM against OpenVINO XAI's on the same ONNX files (issue 26).

OpenVINO XAI 1.1 pins ``numpy==1.*`` and ``openvino-dev==2024.4``, so it cannot share our environment:
the comparison runs in two steps, in two environments, through files in one folder.

    # 1. our environment: ONNX files, inputs and our maps (softmax=False: OpenVINO XAI reads the logits
    #    of a model without a Softmax node)
    python scripts/compare_openvino_xai.py ours --out /tmp/ovcmp [--size 64] [--vit-size 96]
    # 2. a separate virtualenv with OpenVINO XAI (not in requirements-dev.txt):
    python -m venv /tmp/ovxai && /tmp/ovxai/bin/pip install "openvino-xai==1.1.0"
    /tmp/ovxai/bin/python scripts/compare_openvino_xai.py openvino --out /tmp/ovcmp
    # 3. our environment again: the table (--write-docs: into docs/benchmarks.md)
    python scripts/compare_openvino_xai.py report --out /tmp/ovcmp [--write-docs]

Step 2 imports nothing of ours (only numpy, openvino and openvino_xai). OpenVINO XAI's method is
inserted at the node that produces our target tensor, with ``embed_scaling=False`` (raw scores), and
run one image at a time (its branch reshapes to batch 1): ``ReciproCAM`` at a CNN's last feature map;
``ViTReciproCAM`` (Gaussian masks, class token kept) at the tokens entering the last block of a timm
DeiT-tiny (12 blocks, random weights and LayerNorm affines, patch 16), our ``vit_reciprocam`` at
``blocks.10``. The report gives the largest difference of the raw maps and the time per image of
each (ours: the embedded file on ONNX Runtime; theirs: the model with the XAI branch on OpenVINO),
same machine, same run of the three steps.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# name: (target layer, our method, OpenVINO XAI's class, ViT input size?)
MODELS = {"resnet18": ("layer4", "reciprocam", "ReciproCAM"), "resnet50": ("layer4", "reciprocam", "ReciproCAM"),
          "efficientnet_b0": ("features", "reciprocam", "ReciproCAM"),
          "deit_tiny": ("blocks.10", "vit_reciprocam", "ViTReciproCAM")}


def _model(name: str, size: int):
    import torch
    import torchvision

    torch.manual_seed(0)
    if name != "deit_tiny":
        return getattr(torchvision.models, name)(weights=None).eval()
    import timm

    from tests.vit_helpers import randomise_norms

    return randomise_norms(timm.models.vision_transformer.VisionTransformer(  # DeiT-tiny: width 192, 3 heads
        img_size=size, patch_size=16, embed_dim=192, depth=12, num_heads=3, num_classes=1000).eval())


def _pruned(model):
    """The graph with its explained output only, and no node that output does not need."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [o for o in out.graph.output if o.name == "output"]
    del out.graph.output[:]
    out.graph.output.extend(keep)
    producer = {o: n for n in out.graph.node for o in n.output}
    live, stack = set(), ["output"]
    while stack:
        n = producer.get(stack.pop())
        if n is not None and id(n) not in live:
            live.add(id(n))
            stack.extend(n.input)
    nodes = [n for n in out.graph.node if id(n) in live]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def ours(out: Path, size: int, vit_size: int, reps: int) -> None:
    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(ROOT))
    from agnostic_cam import Explainer

    meta = {}
    for name, (layer, method, _) in MODELS.items():
        s = vit_size if name == "deit_tiny" else size
        x = np.random.default_rng(0).random((4, 3, s, s), dtype=np.float32)
        np.save(out / f"{name}_x.npy", x)
        ex = Explainer.from_torch(_model(name, s), layer, input_shape=(3, s, s), progress=False)
        model = _pruned(ex.adapter.engine((3, s, s)).model)
        node = next(n.name for n in model.graph.node if ex.adapter.native_name in n.output)
        onnx.save(model, out / f"{name}.onnx")
        raw = ex.explain(x, method, softmax=False).raw
        ex.embed(out / f"{name}_embedded.onnx", method, softmax=False)
        sess = ort.InferenceSession(str(out / f"{name}_embedded.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(sess.run(["saliency_raw"], {"input": x})[0], raw, atol=1e-5 * np.abs(raw).max())
        sess.run(None, {"input": x[:1]})
        t = time.perf_counter()
        for _ in range(reps):
            for i in range(len(x)):
                sess.run(None, {"input": x[i:i + 1]})
        np.save(out / f"{name}_ours.npy", raw)
        meta[name] = {"node": node, "size": s, "seconds_per_image": (time.perf_counter() - t) / (reps * len(x))}
    (out / "ours.json").write_text(json.dumps(meta, indent=1))


def openvino(out: Path, reps: int) -> None:
    import openvino as ov
    from openvino_xai.methods.white_box import recipro_cam

    meta = json.loads((out / "ours.json").read_text())
    res = {}
    for name, m in meta.items():
        x = np.load(out / f"{name}_x.npy")
        model = ov.Core().read_model(str(out / f"{name}.onnx"))
        cls = getattr(recipro_cam, MODELS[name][2])
        xai = cls(model, target_layer=m["node"], embed_scaling=False, prepare_model=False).prepare_model(False)
        # float32 as ours: OpenVINO's CPU plugin computes in bfloat16 by default where the CPU has bf16 units
        compiled = ov.Core().compile_model(xai, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        maps = np.stack([compiled(x[i:i + 1])["saliency_map"][0] for i in range(len(x))])  # (N, K, h, w)
        compiled(x[:1])
        t = time.perf_counter()
        for _ in range(reps):
            for i in range(len(x)):
                compiled(x[i:i + 1])
        np.save(out / f"{name}_openvino.npy", maps)
        res[name] = {"seconds_per_image": (time.perf_counter() - t) / (reps * len(x))}
    (out / "openvino.json").write_text(json.dumps(res, indent=1))


def report(out: Path, write_docs: bool) -> None:
    import onnxruntime as ort

    mine, theirs = json.loads((out / "ours.json").read_text()), json.loads((out / "openvino.json").read_text())
    lines = ["| model | layer | method (OpenVINO XAI) | input | max abs diff of the raw maps | relative to the map's "
             "largest value | ours (embedded, ONNX Runtime) | OpenVINO XAI (OpenVINO) |",
             "|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    for name in mine:
        x = np.load(out / f"{name}_x.npy")
        ov_maps = np.load(out / f"{name}_openvino.npy")
        logits = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"]).run(
            None, {"input": x})[0]
        theirs_top1 = ov_maps[np.arange(len(x)), logits.argmax(axis=1)]
        mine_maps = np.load(out / f"{name}_ours.npy")
        diff = np.abs(theirs_top1 - mine_maps).max()
        rel = diff / np.abs(mine_maps).max()
        worst = max(worst, rel)
        layer, method, cls = MODELS[name]
        s = mine[name]["size"]
        lines.append(f"| {name} | {layer} | {method} ({cls}) | {s}x{s} | {diff:.1e} | {rel:.1e} | "
                     f"{1000 * mine[name]['seconds_per_image']:.1f} ms/image | "
                     f"{1000 * theirs[name]['seconds_per_image']:.1f} ms/image |")
    table = "\n".join(lines)
    print(table)
    print(f"largest relative difference: {worst:.1e} ({'within' if worst <= 1e-4 else 'OVER'} the 1e-4 goal)")
    if write_docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from docs_section import update_section

        note = ("Generated by `python scripts/compare_openvino_xai.py report --write-docs` after its `ours` and "
                "`openvino` steps (4 images per model, one image per call, OpenVINO compiled with "
                "`INFERENCE_PRECISION_HINT=f32`, `softmax=False` on our side).")
        update_section("<!-- openvino-xai:begin -->", "<!-- openvino-xai:end -->",
                       "Recipro-CAM and ViT-ReciproCAM against OpenVINO XAI", "compare_openvino_xai.py", note, table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["ours", "openvino", "report"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=64, help="CNN input size")
    ap.add_argument("--vit-size", type=int, default=96, help="DeiT input size (patch 16: a 6x6 grid at 96)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true", help="report: write the table into docs/benchmarks.md")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"ours": lambda: ours(args.out, args.size, args.vit_size, args.reps),
     "openvino": lambda: openvino(args.out, args.reps),
     "report": lambda: report(args.out, args.write_docs)}[args.step]()


if __name__ == "__main__":
    main()
