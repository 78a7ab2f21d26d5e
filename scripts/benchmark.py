"""Side-by-side benchmark: agnostic-cam against pytorch-grad-cam (and Captum's LayerGradCam).

Same machine, same run, same model (torchvision ResNet, ``weights=None``, seeded), same inputs
(224x224, seeded) and same targets. Every measurement runs in a fresh subprocess (so the peak
memory of one method cannot hide in memory another one left behind), ours and the peer
alternate repetition by repetition, and the median is reported. Outputs are compared (max abs
diff of the (N, 224, 224) heatmaps). Writes ``out/benchmark/benchmark.{md,json}``; with
``--update-docs`` also ``docs/benchmarks.md``.

    python scripts/benchmark.py --quick            # ResNet-18, batch 1, one repetition: ~2 min
    python scripts/benchmark.py --update-docs      # the full table (see docs/benchmarks.md for cost)

Peak memory is the process's resident-set high-water mark (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` after the model is loaded), minus the resident set at that moment: it
sees ONNX Runtime's and PyTorch's C++ allocations, which ``tracemalloc`` cannot.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's agnostic_cam, also when another copy is installed

SIZE = 224
LAYER = "layer4"
PEERS = {"scorecam": ["pgc"], "ablationcam": ["pgc"], "gradcam": ["pgc", "captum"],
         # methods that cost more than one backward pass (issue 17): a double backward, every bias
         # layer's gradient, a forward before the backward, many patch CAMs
         "shapleycam": ["pgc"], "fullgrad": ["pgc"], "finercam": ["pgc"], "sess": ["pgc"],
         "gradcam+aug_smooth": ["pgc"],  # six augmented copies in one batched call (pgc: one call per copy)
         "occlusion": ["captum_occ"], "kernelshap": ["captum_shap"], "rise": ["dianna_rise"]}
# a method run with explain options, under its own row name: name -> (method, options for both sides)
VARIANTS = {"gradcam+aug_smooth": ("gradcam", {"aug_smooth": True})}
TOP1 = ("finercam",)  # compared with top-1 targets, pytorch-grad-cam FinerCAM's default
PEER_NAMES = {"pgc": "pytorch-grad-cam", "captum": "Captum LayerGradCam", "captum_occ": "Captum Occlusion",
              "captum_shap": "Captum KernelShap", "dianna_rise": "dianna RISEImage (ONNX)"}
# Layer-free methods (issue 16): the same work for both sides, Captum at its defaults otherwise.
BLACKBOX = {"occlusion": {"window": 32, "stride": 16}, "kernelshap": {"segments": 16, "samples": 200},
            "rise": {"masks": 500, "cells": 8, "p": 0.5}}  # dianna: n_masks, feature_res, p_keep (no auto-tune)
CHANNELS = {"resnet18": 512, "resnet50": 2048}
SLOW_INTERLEAVED = {"rise": 2}  # also timed call by call, alternating with the peer and the floor (calls per side)
# Targets of issue 7 (ratio = ours / reference, lower is better).
TARGETS = {("scorecam", "pgc"): 0.65, ("scorecam", "floor"): 1.15, ("ablationcam", "pgc"): 0.02,
           ("gradcam", "floor"): 1.2, ("occlusion", "captum_occ"): 0.5, ("kernelshap", "captum_shap"): 0.5,
           ("rise", "dianna_rise"): 0.5}


# ------------------------------------------------------------------------------------------------
# worker: one implementation of one method on one model/batch, in its own process
# ------------------------------------------------------------------------------------------------
def _status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def setup(job: dict):
    """Model, seeded inputs (torch and NumPy), target classes and the target layer of a job."""
    import numpy as np
    import torch
    import torchvision

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model = getattr(torchvision.models, job["model"])(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(job["batch"], 3, SIZE, SIZE, generator=g)
    targets = np.random.default_rng(2).integers(0, 1000, job["batch"])
    return model, x, x.numpy(), targets, dict(model.named_modules())[LAYER]


def make_impl(impl: str, method: str, model, x, xn, targets, layer, opts: dict | None = None):
    """(call, warm_forward, state) for one implementation; ``call()`` returns its map."""
    import torch

    state = {}
    method, extra = VARIANTS.get(method, (method, {}))
    if impl == "ours":
        from agnostic_cam import Explainer

        ex = Explainer.from_torch(model, LAYER, input_shape=(3, SIZE, SIZE), progress=False)
        state["ex"] = ex
        state["engine"] = ex.adapter.engine((3, SIZE, SIZE))
        state["engine"].session  # export + session creation: setup, like building the peer's object

        def call():
            return ex.explain(xn, method, target=None if method in TOP1 else targets.tolist(),
                              **(opts or BLACKBOX.get(method, {})), **extra).heatmap

        return call, lambda: ex.predict(xn), state

    def warm_forward():
        with torch.no_grad():
            model(x)

    if impl == "pgc":
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from pytorch_grad_cam.sess import SESS

        cls = {"scorecam": pgc.ScoreCAM, "ablationcam": pgc.AblationCAM, "gradcam": pgc.GradCAM,
               "shapleycam": pgc.ShapleyCAM, "fullgrad": pgc.FullGrad, "finercam": pgc.FinerCAM, "sess": SESS}[method]
        cam = cls(model=model, target_layers=[layer])  # its default batch sizes: as users run it
        tg = None if method in TOP1 else [ClassifierOutputTarget(int(t)) for t in targets]
        return (lambda: cam(input_tensor=x, targets=tg, **extra)), warm_forward, state
    if impl == "captum":
        from captum.attr import LayerGradCam

        lgc = LayerGradCam(model, layer)
        # Captum returns the layer-resolution map; post-processed outside the timing
        return (lambda: lgc.attribute(x, target=targets.tolist())), warm_forward, state
    if impl == "captum_occ":
        from captum.attr import Occlusion

        w, st = BLACKBOX["occlusion"]["window"], BLACKBOX["occlusion"]["stride"]
        occ = Occlusion(model)
        return (lambda: occ.attribute(x, sliding_window_shapes=(3, w, w), strides=(3, st, st), baselines=0.0,
                                      target=targets.tolist())), warm_forward, state
    if impl == "captum_shap":
        from captum.attr import KernelShap

        from agnostic_cam.methods.coalitions import grid_labels

        mask = torch.as_tensor(grid_labels((SIZE, SIZE), BLACKBOX["kernelshap"]["segments"]))[None, None]
        ks = KernelShap(model)
        return (lambda: ks.attribute(x, baselines=0.0, target=targets.tolist(), feature_mask=mask.expand(len(x), 3, -1, -1),
                                     n_samples=BLACKBOX["kernelshap"]["samples"])), warm_forward, state
    if impl == "dianna_rise" or (impl == "floor" and method == "rise"):
        import numpy as np

        path = str(Path(tempfile.mkdtemp()) / "model.onnx")  # exported outside the timing
        torch.onnx.export(model, x[:1], path, dynamic_axes={"x": {0: "n"}}, dynamo=False, input_names=["x"])
        o = BLACKBOX["rise"]
    if impl == "floor" and method == "rise":  # the forward passes RISE cannot avoid: ORT on the masked images
        import onnxruntime as ort

        from agnostic_cam.methods.rise import rise_masks

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        masks = rise_masks(np.random.default_rng(0), o["masks"], o["cells"], o["p"], (SIZE, SIZE))
        masked = [np.ascontiguousarray(xn[i] * masks[:, None]) for i in range(len(xn))]  # built outside the timing

        def ort_forwards():
            for m in masked:
                for lo in range(0, len(m), 64):
                    sess.run(None, {"x": m[lo:lo + 64]})

        return ort_forwards, warm_forward, state
    if impl == "dianna_rise":  # dianna (test-only reference) on the same model exported to ONNX, one image per call
        from dianna.methods.rise_image import RISEImage

        def call():
            rise = RISEImage(n_masks=o["masks"], feature_res=o["cells"], p_keep=o["p"], axis_labels={0: "channels"})
            return np.stack([rise.explain(path, xn[i], labels=[int(t)])[0] for i, t in enumerate(targets)])

        return call, warm_forward, state
    if impl == "floor":  # one plain PyTorch forward + backward of the target scores

        def fwd_bwd():
            xx = x.clone().requires_grad_(True)
            o = model(xx)
            o[torch.arange(len(targets)), torch.as_tensor(targets)].sum().backward()
            model.zero_grad(set_to_none=True)

        return fwd_bwd, warm_forward, state
    raise ValueError(impl)


def interleaved(job: dict) -> dict:
    """Fast methods: all implementations in one process, call by call in alternating order, so
    a burst of load from other processes hits them alike. Times only (memory: own processes)."""
    model, x, xn, targets, layer = setup(job)
    impls = ["ours", *PEERS[job["method"]], "floor"]
    calls = {i: make_impl(i, job["method"], model, x, xn, targets, layer)[0] for i in impls}
    for c in calls.values() if job["method"] not in SLOW_INTERLEAVED else ():
        c()  # warm-up (slow methods: one call is long enough to be warm after its first batch)
    times: dict[str, list[float]] = {i: [] for i in impls}
    load0 = os.getloadavg()[0]
    for r in range(job["inner"]):
        for i in (impls if r % 2 == 0 else impls[::-1]):
            t = time.perf_counter()
            calls[i]()
            times[i].append(time.perf_counter() - t)
    return {"job": job, "times_by_impl": times, "load": [load0, os.getloadavg()[0]]}


def worker(job: dict) -> dict:
    import numpy as np

    if job["impl"] == "interleaved":
        return interleaved(job)
    from agnostic_cam.core.imaging import cam_to_heatmap

    model, x, xn, targets, layer = setup(job)
    method, impl = job["method"], job["impl"]
    call, warm_forward, state = make_impl(impl, method, model, x, xn, targets, layer, job.get("options"))
    ex, engine = state.get("ex"), state.get("engine")

    post = (lambda r: cam_to_heatmap(r.detach().numpy()[:, 0], (SIZE, SIZE))) if impl == "captum" else np.asarray
    if impl in ("captum_occ", "captum_shap", "dianna_rise"):  # the same heatmap rule as ours
        from agnostic_cam.methods.rise import RISE

        from agnostic_cam.methods.perturb import LayerFreeMethod

        rule = RISE().heatmap if impl == "dianna_rise" else LayerFreeMethod().heatmap
        post = lambda r: rule(np.asarray(r if impl == "dianna_rise" else r.detach().numpy()[:, 0]), (SIZE, SIZE))  # noqa: E731
    cheap = method == "gradcam" or (impl == "ours" and method != "scorecam")
    rss0 = _status()["VmRSS"]
    reset = _reset_peak()
    load0 = os.getloadavg()[0]
    if cheap:
        call()
    else:
        warm_forward()
    times = []
    t_all = time.perf_counter()
    while True:
        t = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t)
        if not cheap or len(times) >= job["inner"] or time.perf_counter() - t_all > job["budget_s"]:
            break
    peak = _status()["VmHWM"] - rss0 if reset else float("nan")
    heat = post(out)
    res = {"job": job, "times": times, "peak_mb": peak, "rss0_mb": rss0, "load": [load0, os.getloadavg()[0]]}
    if impl == "ours" and method == "scorecam" and not job.get("options"):
        res.update(_scorecam_floor(ex, engine, xn, targets, job["floor_max"]))
    np.save(job["heatmap_file"], np.asarray(heat, np.float32))
    return res


def _scorecam_floor(ex, engine, xn, targets, cap: int) -> dict:
    """ORT time for the forward passes Score-CAM cannot avoid: one per distinct masked input,
    at the batch size Score-CAM uses. Timed on up to ``cap`` inputs and scaled linearly."""
    import numpy as np

    from agnostic_cam.methods import Needs
    from agnostic_cam.methods.scorecam import ScoreCAM
    from agnostic_cam.targets import TargetSpec

    cap_ = ex.capture(xn, TargetSpec(targets.tolist(), xn.shape[0]), Needs.ACTIVATIONS | Needs.FORWARD)
    plans = [ScoreCAM._distinct(a) for a in cap_.activations]
    distinct = sum(len(p[0]) for p in plans) + int(any(p[2].any() for p in plans))
    total = xn.shape[0] * cap_.activations.shape[1]
    m = max(1, min(distinct, cap))
    bs = cap_.batch_size
    inp = np.random.default_rng(3).standard_normal((bs, *xn.shape[1:])).astype(np.float32)
    t = time.perf_counter()
    done = 0
    while done < m:
        k = min(bs, m - done)
        engine.run(inp[:k], [ex.adapter.output_name])
        done += k
    dt = time.perf_counter() - t
    return {"floor_s": dt * distinct / m, "distinct_inputs": distinct, "channel_inputs": total, "ort_batch": bs}


# ------------------------------------------------------------------------------------------------
# parent: schedule workers, interleave, tabulate
# ------------------------------------------------------------------------------------------------
def run_worker(job: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"worker {job['impl']}/{job['method']}/{job['model']}/b{job['batch']} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024
    return float("inf")


def machine() -> dict:
    import numpy as np
    import onnxruntime
    import torch

    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    vers = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}
    from importlib.metadata import version

    for dist in ("grad-cam", "captum"):
        try:
            vers[dist] = version(dist)
        except Exception:  # noqa: BLE001
            vers[dist] = "not installed"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "ram_gb": round(mem, 1),
            "os": platform.platform(), "versions": vers}


def median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return float("nan") if not n else (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)


def bench_group(model: str, batch: int, method: str, args, tmp: Path) -> list[dict]:
    import numpy as np

    impls = ["ours", *PEERS[method]]
    skipped = {}
    est = batch * CHANNELS[model] * SIZE * SIZE * 4 * 4 / 2**20  # pgc Score-CAM: all masked inputs + masks
    if method == "scorecam" and est > 0.5 * mem_available_mb():
        impls.remove("pgc")
        skipped["pgc"] = f"skipped: it materialises all masked inputs (~{est / 1024:.1f} GiB) at once"
    results: dict[str, list[dict]] = {i: [] for i in impls}
    long = method != "gradcam" and batch * CHANNELS[model] >= args.long_inputs
    for r in range(min(args.repeat, args.long_repeat) if long else args.repeat):
        for impl in (impls if r % 2 == 0 else impls[::-1]):
            job = {"model": model, "batch": batch, "method": method, "impl": impl, "threads": args.threads,
                   "inner": args.inner, "budget_s": args.budget, "floor_max": args.floor_max,
                   "heatmap_file": str(tmp / f"{model}_{batch}_{method}_{impl}.npy")}
            res = run_worker(job, args.timeout)
            results[impl].append(res)
            print(f"  {model} b{batch} {method:<12} {impl:<7} {median(res['times']):8.3f} s  "
                  f"peak {res['peak_mb']:7.0f} MB  load {res['load'][0]:.1f}", flush=True)
    ours = results["ours"]
    ours_s = median([t for r in ours for t in r["times"]])
    inter = None
    if method in ("gradcam", *SLOW_INTERLEAVED):  # times from one process alternating the implementations
        job = {"model": model, "batch": batch, "method": method, "impl": "interleaved", "threads": args.threads,
               "inner": SLOW_INTERLEAVED.get(method, max(args.inner, 7))}
        inter = run_worker(job, args.timeout)
        ours_s = median(inter["times_by_impl"]["ours"])
        print(f"  {model} b{batch} {method:<12} interleaved: " + ", ".join(
            f"{k} {median(v):.3f} s" for k, v in inter["times_by_impl"].items()), flush=True)
    ours_heat = np.load(tmp / f"{model}_{batch}_{method}_ours.npy")
    rows = []
    floor = None
    if method == "scorecam" and "floor_s" in ours[0]:
        floor = median([r["floor_s"] for r in ours])
    if inter:
        floor = median(inter["times_by_impl"]["floor"])
    over = ours_s / floor if floor else None
    if method == "scorecam" and floor:  # pair each call with the floor timed in the same process
        over = median([median(r["times"]) / r["floor_s"] for r in ours])
    base = {"model": model, "batch": batch, "method": method, "ours_s": ours_s,
            "ours_peak_mb": max(r["peak_mb"] for r in ours),
            "load": [x for r in ours for x in r["load"]], "floor_s": floor,
            "ours_over_floor": over, "workers": {k: [
                {"times": r.get("times"), "floor_s": r.get("floor_s"), "peak_mb": r.get("peak_mb"), "load": r["load"]}
                for r in v] for k, v in results.items()}}
    if method == "scorecam":
        base.update(distinct_inputs=ours[0].get("distinct_inputs"), channel_inputs=ours[0].get("channel_inputs"),
                    ort_batch=ours[0].get("ort_batch"))
    for peer in PEERS[method]:
        row = dict(base, peer=PEER_NAMES[peer])
        if peer in skipped:
            row.update(peer_s=None, ratio=None, max_abs_diff=None, peer_peak_mb=None, note=skipped[peer])
        else:
            pr = results[peer]
            peer_s = median(inter["times_by_impl"][peer] if inter else [t for r in pr for t in r["times"]])
            heat = np.load(tmp / f"{model}_{batch}_{method}_{peer}.npy")
            row.update(peer_s=peer_s, ratio=ours_s / peer_s, peer_peak_mb=max(r["peak_mb"] for r in pr),
                       max_abs_diff=float(np.abs(heat - ours_heat).max()),
                       load=row["load"] + [x for r in pr for x in r["load"]])
        rows.append(row)
    return rows


def memory_scaling(args, tmp: Path) -> list[dict]:
    """Score-CAM on ResNet-50 layer4 (2048 channels), one image, at several batch sizes."""
    out = []
    for bs in args.scaling_batches:
        job = {"model": "resnet50", "batch": 1, "method": "scorecam", "impl": "ours", "threads": args.threads,
               "inner": 1, "budget_s": 0, "floor_max": 0, "options": {"batch_size": bs},
               "heatmap_file": str(tmp / f"scaling_{bs}.npy")}
        res = run_worker(job, args.timeout)
        print(f"  resnet50 scorecam batch_size={bs:<4} peak {res['peak_mb']:7.0f} MB  {res['times'][0]:.1f} s", flush=True)
        out.append({"batch_size": bs, "peak_mb": res["peak_mb"], "time_s": res["times"][0]})
    return out


def fmt(v, spec: str = ".3f", none: str = "-") -> str:
    return none if v is None or v != v else format(v, spec)


def verdicts(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if r["model"] != "resnet18":
            continue
        for (m, ref), limit in TARGETS.items():
            if m != r["method"]:
                continue
            if ref == "floor":
                got, what = r["ours_over_floor"], "the forward passes it cannot avoid (ORT)" if m == "scorecam" \
                    else "one plain PyTorch forward + backward"
                if r["peer"] != PEER_NAMES[PEERS[m][0]]:
                    continue
            elif r["peer"] == PEER_NAMES[ref]:
                got, what = r["ratio"], PEER_NAMES[ref]
            else:
                continue
            ok = "met" if got is not None and got <= limit else "NOT met"
            lines.append(f"- {m} resnet18 batch {r['batch']}: {fmt(got, '.3f')}x {what} (target <= {limit}x): **{ok}**")
    return lines


def markdown(rows: list[dict], scaling: list[dict], info: dict) -> str:
    hdr = ("| model | batch | method | peer | ours (s) | peer (s) | ours/peer | floor (s) | ours/floor "
           "| max abs diff | peak MB ours | peak MB peer |\n|" + "---|" * 12)
    body = [hdr]
    for r in rows:
        body.append(f"| {r['model']} | {r['batch']} | {r['method']} | {r['peer']} | {fmt(r['ours_s'])} | "
                    f"{fmt(r['peer_s'])} | {fmt(r['ratio'])} | {fmt(r['floor_s'])} | {fmt(r['ours_over_floor'])} | "
                    f"{fmt(r['max_abs_diff'], '.1e')} | {fmt(r['ours_peak_mb'], '.0f')} | {fmt(r['peer_peak_mb'], '.0f')} |")
    notes = [f"- {r['model']} b{r['batch']} {r['method']} vs {r['peer']}: {r['note']}" for r in rows if r.get("note")]
    sc = [f"- {r['model']} b{r['batch']}: {r['distinct_inputs']} distinct masked inputs scored for "
          f"{r['channel_inputs']} channels, ORT batch {r['ort_batch']}"
          for r in rows if r["method"] == "scorecam" and r.get("distinct_inputs") and r["peer"] == PEER_NAMES["pgc"]]
    v = info["versions"]
    text = [f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM; {info['os']}",
            f"Load average (1 min) during the run: min {info['load_min']:.2f}, median {info['load_median']:.2f}, "
            f"max {info['load_max']:.2f}. Run of {info['date']}, {info['minutes']:.1f} min, repeat {info['repeat']} "
            f"({info.get('long_repeat', info['repeat'])} for Score-/Ablation-CAM with >= {info.get('long_inputs', '-')} "
            "channel inputs).",
            f"Versions: torch {v['torch']}, onnxruntime {v['onnxruntime']} ({', '.join(v['providers'])}), "
            f"grad-cam {v['grad-cam']}, captum {v['captum']}, numpy {v['numpy']}, python {v['python']}.", "",
            *body, ""]
    if sc or notes:
        text += [*sc, *notes, ""]
    t = verdicts(rows)
    if t:
        text += ["Targets (issue 7):", "", *t, ""]
    have = {(r["model"], r["batch"], r["method"]) for r in rows}
    missing = [f"{m} b{b} {me}" for m in CHANNELS for b in (1, 8) for me in PEERS if (m, b, me) not in have]
    if missing:
        text += [f"Not in this table (not selected, or skipped, in this run): {', '.join(missing)}.", ""]
    if scaling:
        full = CHANNELS["resnet50"] * 3 * SIZE * SIZE * 4 / 2**20
        text += ["Score-CAM memory on ResNet-50 `layer4` (2048 channels), one image, by Score-CAM batch size "
                 f"(all 2048 masked inputs at once would be {full:.0f} MB):", "",
                 "| batch_size | peak MB | time (s) |", "|---|---|---|",
                 *[f"| {s['batch_size']} | {s['peak_mb']:.0f} | {s['time_s']:.1f} |" for s in scaling], ""]
    return "\n".join(text)


DOC_HEAD = """# Benchmarks

`make benchmark` (or `python scripts/benchmark.py --update-docs`) regenerates this page; `python
scripts/benchmark.py --quick` is a two-minute check (ResNet-18, batch 1). Options: `--models`,
`--batch`, `--methods`, `--repeat`, `--out`.

How it measures: torchvision ResNet-18/50 (`weights=None`, seeded), 224x224 inputs, target layer
`layer4`, the same seeded inputs and target classes for every implementation. Each measurement
runs in a fresh subprocess; ours and the peer alternate repetition by repetition and the table
shows medians. Ours includes everything `Explainer.explain` does (captures, forward passes,
post-processing) but not the one-time ONNX export and session creation (the peer's set-up,
building its CAM object, is not timed either). Peers run as users run them, with their default
batch sizes. *max abs diff* compares the (N, 224, 224) heatmaps (Captum's layer map goes
through the same post-processing first). *floor*: for Score-CAM, the ONNX Runtime time of one
forward pass per distinct masked input at the batch size Score-CAM uses (the passes it cannot
avoid); for Grad-CAM, one plain PyTorch forward + `backward()` of the target scores, timed
interleaved with our calls. *peak MB*: the process's resident-set high-water mark during the
call minus the resident set before it (Linux `VmHWM`, reset via `/proc/self/clear_refs`), so it
includes ONNX Runtime's and PyTorch's native allocations that `tracemalloc` cannot see. Memory
freed during set-up (our ONNX export runs the model once) can be reused without raising the
resident set, so a small number means "no more than the set-up already needed".

Grad-CAM, its peers and its floor are timed call by call, alternating, in one process (they take
milliseconds, so a burst of load from another process would otherwise land on one side only);
the Score-CAM floor is timed in the same process right after our call, on up to 512 inputs
(`--floor-max`) scaled to the number of distinct inputs, and *ours/floor* is the median over
processes of each call's time over its own floor. On a shared machine (load above
the core count) separately timed runs still move by tens of percent: read the ratios with the
load line below, and prefer a run on a quiet machine.

Cost: `make benchmark` runs every group (ResNet-18/50, batch 1/8, three methods; two
repetitions for the short groups, one for the long Score-/Ablation-CAM ones) and takes about
40 minutes on a quiet 2-core machine, most of it in pytorch-grad-cam's ResNet-50 batch-8
Ablation-CAM (16,384 full forward passes) and our ResNet-50 batch-8 Score-CAM; add
`--skip resnet50:8:scorecam,resnet50:8:ablationcam` for a ~15-minute run. pytorch-grad-cam's
Score-CAM is skipped (and the row says so) when the masked inputs it builds all at once would
exceed half the available memory (ResNet-50, batch 8: ~13 GiB).

GPU rows are pending: this run had no GPU. On a machine with `onnxruntime-gpu`, the engine uses
the CUDA execution provider with I/O binding and larger batches by itself
(`OnnxEngine.uses_io_binding`, `OnnxEngine.batch_size_for`); run the same command there.

"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--methods", default="scorecam,ablationcam,gradcam")
    ap.add_argument("--repeat", type=int, default=2, help="fresh-process repetitions per implementation")
    ap.add_argument("--long-repeat", type=int, default=1,
                    help="repetitions for Score-/Ablation-CAM groups with >= --long-inputs channel inputs")
    ap.add_argument("--long-inputs", type=int, default=4096, help="batch x channels from which a group is long")
    ap.add_argument("--inner", type=int, default=5, help="calls per process for the fast methods")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of repeated calls per process (fast methods)")
    ap.add_argument("--floor-max", type=int, default=512, help="Score-CAM floor: inputs timed (then scaled)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--scaling-batches", default="4,16,64", help="Score-CAM batch sizes for the memory test ('' skips)")
    ap.add_argument("--skip", default="", help="groups to leave out, e.g. resnet50:8:scorecam,resnet50:8:ablationcam")
    ap.add_argument("--quick", action="store_true", help="ResNet-18, batch 1, one repetition, no memory-scaling test")
    ap.add_argument("--out", default=str(ROOT / "out" / "benchmark"))
    ap.add_argument("--update-docs", action="store_true", help="also write docs/benchmarks.md")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--merge", help="a benchmark.json from an earlier run: keep its rows for groups this run skips")
    ap.add_argument("--render", help="only re-write the Markdown (and docs with --update-docs) from a benchmark.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.render:
        data = json.loads(Path(args.render).read_text())
        md = markdown(data["rows"], data.get("memory_scaling", []), data["machine"]) + data.get("tail", "")
        write(md, data, Path(args.out), args.update_docs)
        return 0
    if args.quick:
        args.models, args.batch, args.repeat, args.scaling_batches = "resnet18", "1", 1, ""
        args.floor_max = min(args.floor_max, 128)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in CHANNELS]
    methods = [m for m in args.methods.split(",") if m]
    if bad or any(m not in PEERS for m in methods):
        ap.error(f"--models from {sorted(CHANNELS)}, --methods from {sorted(PEERS)}")
    args.scaling_batches = [int(b) for b in args.scaling_batches.split(",") if b]
    start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for model in models:
            for batch in [int(b) for b in args.batch.split(",")]:
                for method in methods:
                    if f"{model}:{batch}:{method}" in args.skip.split(","):
                        continue
                    rows += bench_group(model, batch, method, args, tmp)
        scaling = memory_scaling(args, tmp) if args.scaling_batches else []
    merged_from = None
    if args.merge:
        old = json.loads(Path(args.merge).read_text())
        done = {(r["model"], r["batch"], r["method"]) for r in rows}
        keep = [r for r in old["rows"] if (r["model"], r["batch"], r["method"]) not in done]
        order = {(m, b, me): k for k, (m, b, me) in enumerate(
            (m, int(b), me) for m in CHANNELS for b in (1, 8) for me in PEERS)}
        rows = sorted(rows + keep, key=lambda r: order.get((r["model"], r["batch"], r["method"]), 99))
        scaling = scaling or old.get("memory_scaling", [])
        merged_from = old["machine"].get("date")
    loads = sorted(x for r in rows for x in r["load"])
    info = machine() | {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "minutes": (time.time() - start) / 60,
                        "repeat": args.repeat, "long_repeat": args.long_repeat, "long_inputs": args.long_inputs, "load_min": loads[0], "load_median": median(loads), "load_max": loads[-1]}
    md = markdown(rows, scaling, info)
    if merged_from:
        md += (f"\nOnly some groups were re-run at the time above; the other rows (and the memory test, if not "
               f"re-run) come from earlier runs on the same machine, the latest of {merged_from} (--merge).\n")

    tail = md[len(markdown(rows, scaling, info)):]
    write(md, {"machine": info, "rows": rows, "memory_scaling": scaling, "tail": tail}, Path(args.out), args.update_docs)
    return 0


def write(md: str, data: dict, out: Path, docs: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text(md + "\n")
    (out / "benchmark.json").write_text(json.dumps(data, indent=1))
    if docs:
        (ROOT / "docs" / "benchmarks.md").write_text(DOC_HEAD + md + "\n")
    print("\n" + md)
    print(f"\nwrote {out / 'benchmark.md'} and .json" + (" and docs/benchmarks.md" if docs else ""))


if __name__ == "__main__":
    sys.exit(main())
