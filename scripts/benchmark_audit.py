"""Audit throughput: images per second of `agnostic-cam audit` on ResNet-18 (random seeded weights).

Rows (same images, same metrics: deletion/insertion AUC with 20 steps, average drop, increase):
- local engine now, and "before" (a source tree of an older version, e.g. ``git archive 0ab367c``,
  the last commit before issue 14's work);
- the Ray engine with 1 and 2 workers (a local Ray started by the audit);
- the plain pytorch-grad-cam loop a user would write (one image at a time, curves batched per image).

Local rows ("local before", "local now") run the same driver in their own process, each with its own
source tree on PYTHONPATH: build the explainer, run every method once on a grey probe image (so the
gradient backend's one-time graph conversion is outside the timing on both sides), then time the
audit of all images: images/s = images / audit wall seconds, and the audit's own CPU seconds
(process CPU, all threads, measured around the audit call). With ``--repeats R`` the two rows
alternate (before, now, now, before, ...) so a machine shared with other jobs loads both alike.
Ray rows time ``run.seconds`` of results.json (includes starting Ray and its workers); their process
CPU is the driver's only (Ray workers are not its children).

    python scripts/benchmark_audit.py --images 16 --before /tmp/agnostic-cam-0ab367c --repeats 2 --json bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GRAD_CAM_LOOP = r'''
import json, sys, time
import numpy as np, torch, torchvision
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, ScoreCAM
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
files, methods, steps = json.loads(sys.argv[1]), sys.argv[2].split(","), 20
cls = {"gradcam": GradCAM, "eigencam": EigenCAM, "scorecam": ScoreCAM}
t0 = time.perf_counter()
cams = {m: cls[m](model=model, target_layers=[model.layer4[-1]]) for m in methods}
def blur(x, sigma=5.0, r=5):
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1) / sigma) ** 2); k = (k / k.sum())
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
rows = []
for f in files:
    x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR),
                                    np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        p = model(x).softmax(1)
    k = int(p.argmax())
    for m in methods:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        cam = torch.from_numpy(cams[m](input_tensor=x, targets=[ClassifierOutputTarget(k)]))
        order = torch.argsort(-cam.flatten(), stable=True)
        rank = torch.empty_like(order); rank[order] = torch.arange(order.numel())
        counts = torch.ceil(torch.arange(steps + 1) * cam.numel() / steps)
        moved = (rank[None] < counts[:, None]).view(steps + 1, 1, 224, 224)
        with torch.no_grad():
            d = model(torch.where(moved, torch.zeros_like(x), x)).softmax(1)[:, k]
            i = model(torch.where(moved, x, blur(x))).softmax(1)[:, k]
            o = model(x * cam[:, None]).softmax(1)[0, k]
        auc = lambda s: float((s[1:] + s[:-1]).sum() / 2 / steps)
        rows.append({"deletion": auc(d), "insertion": auc(i), "drop": float(torch.relu(p[0, k] - o) / p[0, k])})
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(rows)}))
'''


LOCAL_DRIVER = r'''
import json, sys, time
from pathlib import Path
import numpy as np
import agnostic_cam.audit as A
from agnostic_cam import Explainer
from agnostic_cam.inputs.preprocess import Preprocess
model, images, out, methods = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
ex = Explainer.from_onnx(model, progress=False)
pre = Preprocess.for_adapter(ex.adapter)
probe = pre.to_batch([np.full((224, 224, 3), 127, np.uint8)])  # the benchmark model takes 224 px
for m in methods:  # one-time work (gradient graph conversion, sessions) outside the timing, both sides
    ex.explain(probe, m, target=0)
c0, t0 = time.process_time(), time.perf_counter()
if hasattr(A, "Audit"):  # the version before issue 14: one image at a time
    res = A.Audit(ex, pre, A.AuditConfig(methods, resume=False), Path(out), Path(model).read_bytes(),
                  Path(model).name).run(A.find_images(Path(images)), progress=False)
else:
    res = A.run(model, images, out, methods, resume=False, progress=False, explainer=ex)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"images": len(res["images"]), "seconds": wall, "cpu": cpu}))
'''


def _run(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r, wall, cpu


def local_row(name: str, src: Path, model: Path, images: Path, methods: str, work: Path) -> dict:
    out = work / f"out-{name.replace(' ', '_')}-{methods.replace(',', '_')}"
    cmd = [sys.executable, "-c", LOCAL_DRIVER, str(model), str(images), str(out), methods]
    r, wall, cpu = _run(cmd, {**os.environ, "PYTHONPATH": str(src)})
    if r.returncode != 0:
        raise SystemExit(f"the {name} driver failed ({r.returncode}):\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    n, secs = res["images"], res["seconds"]
    return {"row": name, "methods": methods, "images": n, "run_seconds": round(secs, 2),
            "images_per_s": round(n / secs, 4), "audit_cpu_s": round(res["cpu"], 1),
            "cpu_s_per_image": round(res["cpu"] / n, 2), "process_wall_s": round(wall, 1),
            "process_cpu_s": round(cpu, 1)}


def audit_row(name: str, src: Path, model: Path, images: Path, methods: str, extra: list[str], work: Path) -> dict:
    out = work / f"out-{name.replace(' ', '_')}-{methods.replace(',', '_')}"
    cmd = [sys.executable, "-m", "agnostic_cam.cli", "audit", str(model), str(images), "--out", str(out),
           "--methods", methods, "--no-resume", "--no-progress", *extra]
    r, wall, cpu = _run(cmd, {**os.environ, "PYTHONPATH": str(src)})
    res = json.loads((out / "results.json").read_text())
    n = len(res["images"]) or res["run"].get("explained", 0)
    secs = res["run"]["seconds"]
    return {"row": name, "methods": methods, "images": n, "run_seconds": round(secs, 2), "images_per_s": round(n / secs, 4),
            "process_wall_s": round(wall, 1), "process_cpu_s": round(cpu, 1)}


def grad_cam_row(files: list[str], methods: str) -> dict:
    r, wall, cpu = _run([sys.executable, "-c", GRAD_CAM_LOOP, json.dumps(files), methods], dict(os.environ))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    n = len(files)
    return {"row": "pytorch-grad-cam loop", "methods": methods, "images": n, "run_seconds": round(res["seconds"], 2),
            "images_per_s": round(n / res["seconds"], 4), "process_wall_s": round(wall, 1), "process_cpu_s": round(cpu, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16, help="images for eigencam+gradcam (default 16)")
    ap.add_argument("--scorecam-images", type=int, default=4, help="images for scorecam (default 4; 512 channels)")
    ap.add_argument("--before", type=Path, help="source tree of the version to compare with (its agnostic_cam/)")
    ap.add_argument("--no-local", action="store_true", help="skip the local rows")
    ap.add_argument("--repeats", type=int, default=1, help="alternating repeats of the local rows (default 1)")
    ap.add_argument("--ray", default="1,2", help="Ray worker counts to run ('' for none; default 1,2)")
    ap.add_argument("--no-grad-cam", action="store_true", help="skip the pytorch-grad-cam loop")
    ap.add_argument("--skip-scorecam", action="store_true")
    ap.add_argument("--only-scorecam", action="store_true", help="run only the scorecam rows")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()

    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    torch.manual_seed(0)
    model = work / "resnet18.onnx"
    torch.onnx.export(torchvision.models.resnet18(weights=None).eval(), (torch.zeros(1, 3, 224, 224),), str(model),
                      dynamo=False, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    rng = np.random.default_rng(0)
    sets = {} if args.only_scorecam else {"eigencam,gradcam": args.images}
    if not args.skip_scorecam:
        sets["scorecam"] = args.scorecam_images
    rows = []
    for methods, n in sets.items():
        images = work / f"images-{n}"
        if not images.exists():
            images.mkdir()
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(images / f"{i:04d}.jpg")
        local = [("local before", args.before)] if args.before else []
        local.append(("local now", ROOT))
        for rep in range(0 if args.no_local else args.repeats):  # alternate the order so drifting load hits both rows alike
            for name, src in (local if rep % 2 == 0 else local[::-1]):
                rows.append({**local_row(name, src, model, images, methods, work), "repeat": rep})
                print(json.dumps(rows[-1]), flush=True)
        for w in [w for w in args.ray.split(",") if w]:
            name = f"ray {w} worker{'s' if w != '1' else ''}"
            rows.append(audit_row(name, ROOT, model, images, methods, ["--engine", "ray", "--workers", w], work))
            print(json.dumps(rows[-1]), flush=True)
        if not args.no_grad_cam:
            rows.append(grad_cam_row(sorted(str(p) for p in images.iterdir()), methods))
            print(json.dumps(rows[-1]), flush=True)
    meta = {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
