"""Recipro-CAM against OpenVINO XAI's on the same ONNX files (issue 26).

OpenVINO XAI 1.1 pins ``numpy==1.*`` and ``openvino-dev==2024.4``, so it cannot share our environment:
the comparison runs in two steps, in two environments, through files in one folder.

    # 1. our environment: ONNX files, inputs and our maps (reciprocam, softmax=False: OpenVINO XAI reads
    #    the logits of a model without a Softmax node)
    python scripts/compare_openvino_xai.py ours --out /tmp/ovcmp [--size 64]
    # 2. a separate virtualenv with OpenVINO XAI (not in requirements-dev.txt):
    python -m venv /tmp/ovxai && /tmp/ovxai/bin/pip install "openvino-xai==1.1.0"
    /tmp/ovxai/bin/python scripts/compare_openvino_xai.py openvino --out /tmp/ovcmp
    # 3. our environment again: the table
    python scripts/compare_openvino_xai.py report --out /tmp/ovcmp

Step 2 imports nothing of ours (only numpy, openvino and openvino_xai). OpenVINO XAI's ReciproCAM is
inserted at the node that produces our target tensor, with ``embed_scaling=False`` (raw scores), and
run one image at a time (its branch reshapes to batch 1); the report gives the largest difference of
the raw maps and the time per image of each (ours: the embedded file on ONNX Runtime; theirs: the
model with the XAI branch on OpenVINO), same machine, same run of the three steps.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODELS = {"resnet18": "layer4", "resnet50": "layer4", "efficientnet_b0": "features"}


def ours(out: Path, size: int, reps: int) -> None:
    import onnx
    import onnxruntime as ort
    import torch
    import torchvision

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from agnostic_cam import Explainer

    x = np.random.default_rng(0).random((4, 3, size, size), dtype=np.float32)
    np.save(out / "x.npy", x)
    meta = {}
    for name, layer in MODELS.items():
        torch.manual_seed(0)
        ex = Explainer.from_torch(getattr(torchvision.models, name)(weights=None).eval(), layer,
                                  input_shape=(3, size, size), progress=False)
        model = onnx.ModelProto()
        model.CopyFrom(ex.adapter.engine((3, size, size)).model)
        node = next(n.name for n in model.graph.node if ex.adapter.activation_name in n.output)
        keep = [o for o in model.graph.output if o.name == "output"]
        del model.graph.output[:]
        model.graph.output.extend(keep)
        onnx.save(model, out / f"{name}.onnx")
        raw = ex.explain(x, "reciprocam", softmax=False).raw
        ex.embed(out / f"{name}_reciprocam.onnx", "reciprocam", softmax=False)
        sess = ort.InferenceSession(str(out / f"{name}_reciprocam.onnx"), providers=["CPUExecutionProvider"])
        sess.run(None, {"input": x[:1]})
        t = time.perf_counter()
        for _ in range(reps):
            for i in range(len(x)):
                sess.run(None, {"input": x[i:i + 1]})
        np.save(out / f"{name}_ours.npy", raw)
        meta[name] = {"node": node, "seconds_per_image": (time.perf_counter() - t) / (reps * len(x))}
    (out / "ours.json").write_text(json.dumps(meta, indent=1))


def openvino(out: Path, reps: int) -> None:
    import openvino as ov
    from openvino_xai.methods.white_box.recipro_cam import ReciproCAM

    x = np.load(out / "x.npy")
    meta = json.loads((out / "ours.json").read_text())
    res = {}
    for name, m in meta.items():
        model = ov.Core().read_model(str(out / f"{name}.onnx"))
        xai = ReciproCAM(model, target_layer=m["node"], embed_scaling=False, prepare_model=False).prepare_model(False)
        # float32 as ours: OpenVINO's CPU plugin computes in bfloat16 by default where the CPU has bf16 units
        compiled = ov.Core().compile_model(xai, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        maps = np.stack([compiled(x[i:i + 1])["saliency_map"][0] for i in range(len(x))])  # (N, K, h, w)
        t = time.perf_counter()
        for _ in range(reps):
            for i in range(len(x)):
                compiled(x[i:i + 1])
        np.save(out / f"{name}_openvino.npy", maps)
        res[name] = {"seconds_per_image": (time.perf_counter() - t) / (reps * len(x))}
    (out / "openvino.json").write_text(json.dumps(res, indent=1))


def report(out: Path) -> None:
    import onnxruntime as ort

    x = np.load(out / "x.npy")
    mine, theirs = json.loads((out / "ours.json").read_text()), json.loads((out / "openvino.json").read_text())
    print("| model | layer | max abs diff of the raw maps | relative to the map's largest value | ours (embedded, ONNX "
          "Runtime) | OpenVINO XAI (OpenVINO) |")
    print("|---|---|---|---|---|---|")
    for name in mine:
        ov_maps = np.load(out / f"{name}_openvino.npy")
        logits = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"]).run(
            None, {"input": x})[0]
        theirs_top1 = ov_maps[np.arange(len(x)), logits.argmax(axis=1)]
        mine_maps = np.load(out / f"{name}_ours.npy")
        diff = np.abs(theirs_top1 - mine_maps).max()
        print(f"| {name} | {MODELS[name]} | {diff:.1e} | {diff / np.abs(mine_maps).max():.1e} | {1000 * mine[name]['seconds_per_image']:.1f} ms/image | "
              f"{1000 * theirs[name]['seconds_per_image']:.1f} ms/image |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["ours", "openvino", "report"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"ours": lambda: ours(args.out, args.size, args.reps), "openvino": lambda: openvino(args.out, args.reps),
     "report": lambda: report(args.out)}[args.step]()


if __name__ == "__main__":
    main()
