"""Core speed and memory of the sgone models, next to the published SG-One forward.

For each backbone (ImageNet weights when present, else random init: the cost does not depend
on the weights, and the table says which), each architecture and each input size it measures
    episode   ms per 1-shot episode from images: what a one-off prediction costs (encode the
              support, prototype, encode the query, segment, upsample to the input size, softmax);
              for the sgone models `model(support, mask, query)`;
    query     ms per query with a cached support prototype: `model.encode` + `model.segment`
              + upsample + softmax, i.e. `Predictor.predict` after `set_support` minus numpy work
              (`--predictor` times `Predictor.predict` on uint8 images too);
    speed-up  episode / query;
    GFLOPs    of one episode, counted by torch's FlopCounterMode (convolutions and matmuls);
    peak MiB  the peak memory of one episode / one query above the resting process: on the CPU
              the rise of the peak resident set size (VmHWM, reset before each measured call
              through /proc/self/clear_refs; ru_maxrss deltas where that is unavailable), on
              CUDA torch.cuda.max_memory_allocated above the allocated memory before the call;
and the same episode for the published SG-One VGG-16 layout (`published_sgone.py`).

Models are built from the registry (`prototype-mobilenet_v2` with its registered options) and,
unless `--layout plain`, prepared as `Predictor` runs them (`prepare_for_inference`: BatchNorm
folded, channels-last where that is faster on the CPU). Every configuration runs in a fresh
subprocess: fp32, torch.inference_mode, the model in eval mode, `--warmup` untimed calls, one untimed call per mode for the memory, then `--repeats`
timed calls per mode, the modes interleaved so that a change of machine load hits all of them
alike; the table shows medians (`--stat min`: minima). The published layout is timed inside the VGG-16 SG-One
process, interleaved with it, so the first target compares a paired measurement.

Targets (from the issue; stated for a 2-core CPU at fp32), printed as PASS/FAIL lines:
  1. the VGG-16 SG-One 1-shot episode at 321x321 is no slower than the published forward;
  2. its cached-support query is at least 1.8x faster than its full episode;
  3. the default model's (prototype-mobilenet_v2) 1-shot episode at 473x473 takes < 250 ms.
A FAIL makes the exit status 1 (`--no-fail` keeps it 0). The header prints a 2048^3 fp32
matmul rate before and after the run: a figure far below ~200 GFLOP/s (REFERENCE.md, section 5)
means the machine was busy and the absolute times, target 3 above all, are inflated.

    python benchmarks/core_speed.py                           # everything, about 5-6 min on 2 idle cores
    python benchmarks/core_speed.py --quick                   # only what the 3 targets need
    python benchmarks/core_speed.py --backbones vgg16 --sizes 321 --repeats 9 --json out.json
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from machine import matmul_gflops

HERE = Path(__file__).resolve().parent
BACKBONES = ("vgg16", "mobilenet_v2", "efficientnet_lite0", "resnet50")
ARCHS = ("sgone", "prototype")
DEFAULT_SIZES = (321, 473)
QUERY_TARGET = 1.8
DEFAULT_EPISODE_TARGET_MS = 250.0
REFERENCE_MATMUL_GFLOPS = 200.0  # 2048^3 fp32 matmul on an idle 2-core machine (REFERENCE.md 5)


# ============================================================================ worker side
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    """Give freed heap memory back to the OS, so the resting RSS is the live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of one call above the memory in use just before it, in MiB."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        self.method = "cuda max_memory_allocated" if self.cuda else "VmHWM (clear_refs)"
        if not self.cuda and not self._reset_hwm():
            self.method = "ru_maxrss delta"

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak RSS (VmHWM, and ru_maxrss with it) to the current RSS
            return _status_kib("VmHWM") is not None
        except OSError:
            return False

    def measure(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            torch = self.torch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        _trim_heap()
        if self.method.startswith("VmHWM"):
            self._reset_hwm()
            base = _status_kib("VmRSS")
            fn()
            return max(0, _status_kib("VmHWM") - base) / 1024
        # without clear_refs only a rise above the process's earlier peak can be seen
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def _episode_inputs(size: int, device: Any, seed: int = 0):
    """Support (1,1,3,S,S), support mask (1,1,S,S) {0,1,255}, query (1,3,S,S): [0,1] floats."""
    import torch

    g = torch.Generator().manual_seed(seed)
    support = torch.rand(1, 1, 3, size, size, generator=g)
    query = torch.rand(1, 3, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r = (yy / 0.6) ** 2 + (xx / 0.4) ** 2
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[r <= 1.1] = 255  # a thin ignore band around the object, as in VOC labels
    mask[r <= 1.0] = 1
    return support.to(device), mask.view(1, 1, size, size).to(device), query.to(device)


def _count_gflops(fn: Callable[[], Any]) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        return counter.get_total_flops() / 1e9
    except Exception:  # noqa: BLE001 - an op the counter cannot handle: leave the column empty
        return None


def _registry_name(spec: dict) -> str:
    return f"{spec['arch']}-{spec['backbone']}" + ("-published" if spec.get("variant") == "published" else "")


def _model_subject(spec: dict, size: int, device: Any, predictor: bool) -> dict:
    """Callables for one sgone model: episode, cached query (and Predictor.predict)."""
    import torch

    from sgone import ops
    from sgone.errors import SgoneError
    from sgone.models.inference import prepare_for_inference
    from sgone.models.registry import MODELS, build_model_from_config

    config = MODELS[_registry_name(spec)]  # the registered options (e.g. the default's high_stride) apply
    try:
        model = build_model_from_config(config, weights="auto")
    except SgoneError:  # no ImageNet file on this machine: random init costs the same
        model = build_model_from_config(config, weights=None)
    weights = "imagenet" if getattr(model.backbone, "weights_path", None) else "random"
    model = model.to(device).eval()
    if spec.get("layout", "inference") == "inference":
        prepare_for_inference(model, device)  # what Predictor and `sgone segment` run
    support, mask, query = _episode_inputs(size, device)
    hw = (size, size)

    def episode(m=model, s=support, k=mask, q=query):
        out = m(s, k, q)
        return ops.upsample_logits(out["logits"], hw).softmax(dim=1)[:, 1]

    with torch.inference_mode():
        proto = model.support_prototype(model.encode(support[:, 0], need_side=False), mask[:, 0])

    def query_fn(m=model, q=query, p=proto):
        out = m.segment(m.encode(q), p)
        return ops.upsample_logits(out["logits"], hw).softmax(dim=1)[:, 1]

    fns = {"episode": episode, "query": query_fn}
    if predictor:
        import numpy as np

        from sgone.predictor import Predictor

        pred = Predictor(model, device=device, size=size)
        to_u8 = lambda t: (t.squeeze(0).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)  # noqa: E731
        pred.set_support([to_u8(support[0])], [mask[0, 0].cpu().numpy().astype(np.uint8)])
        query_u8 = to_u8(query)
        fns["predict"] = lambda: pred.predict(query_u8)

    # counted on real tensors: the k-means of the background parts needs values (no meta device)
    with torch.inference_mode():
        gflops = {"episode": _count_gflops(episode), "query": _count_gflops(query_fn)}
    return {"weights": weights, "fns": fns, "gflops": gflops}


def _published_subject(size: int, device: Any) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(HERE))
    from published_sgone import PublishedSGOne, counted_gflops

    torch.manual_seed(0)
    model = PublishedSGOne().to(device).eval()
    support, mask, query = _episode_inputs(size, device)
    support, mask = support[:, 0], (mask[:, 0] > 0).long()  # the public code reads 255 as object
    hw = (size, size)

    def episode():
        out = model(support, mask, query)
        return F.interpolate(out["logits"], size=hw, mode="bilinear", align_corners=False).softmax(dim=1)[:, 1]

    return {"weights": "random", "fns": {"episode": episode},
            "gflops": {"episode": counted_gflops(model, support, mask, query)}}


def worker(cfg: dict) -> dict:
    """Time and measure every subject of one process; returns JSON-able results."""
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = torch.device(cfg["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    size = int(cfg["size"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    subjects = []
    for spec in cfg["subjects"]:
        if spec["kind"] == "published":
            subjects.append((spec, _published_subject(size, device)))
        else:
            subjects.append((spec, _model_subject(spec, size, device, cfg.get("predictor", False))))
    calls = [(i, mode, fn) for i, (_, subj) in enumerate(subjects) for mode, fn in subj["fns"].items()]

    def run(fn):
        fn()
        sync()

    mem = PeakMemory(device)
    peaks: dict[tuple[int, str], float] = {}
    times: dict[tuple[int, str], list[float]] = {(i, mode): [] for i, mode, _ in calls}
    cpu: dict[tuple[int, str], list[float]] = {(i, mode): [] for i, mode, _ in calls}
    with torch.inference_mode():
        for _ in range(int(cfg["warmup"])):
            for _, _, fn in calls:
                run(fn)
        for i, mode, fn in calls:  # smallest first does not matter: the peak is reset per call
            peaks[(i, mode)] = mem.measure(lambda: run(fn))
        for r in range(int(cfg["repeats"])):
            order = calls if r % 2 == 0 else calls[::-1]  # alternate, so no mode always runs first
            for i, mode, fn in order:
                c0, t0 = time.process_time(), time.perf_counter()
                run(fn)
                times[(i, mode)].append((time.perf_counter() - t0) * 1e3)
                cpu[(i, mode)].append((time.process_time() - c0) * 1e3)

    results = []
    for i, (spec, subj) in enumerate(subjects):
        entry = {"spec": spec, "size": size, "weights": subj["weights"], "modes": {}}
        for mode in subj["fns"]:
            t = times[(i, mode)]
            entry["modes"][mode] = {
                "median_ms": statistics.median(t), "min_ms": min(t), "times_ms": t,
                "cpu_median_ms": statistics.median(cpu[(i, mode)]),
                "peak_mib": peaks[(i, mode)], "gflops": subj["gflops"].get(mode),
            }
        results.append(entry)
    return {"results": results, "threads": torch.get_num_threads(), "memory_method": mem.method}


# ============================================================================ driver side
STAT = "median_ms"  # or "min_ms" (--stat min): which statistic of the timed calls is reported
def _spec_label(spec: dict) -> str:
    if spec["kind"] == "published":
        return "published SG-One"
    return spec["arch"] + (f" ({spec['variant']})" if spec.get("variant") else "")


def _run_worker(cfg: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError("worker failed: " + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _default_model() -> tuple[str, str]:
    from sgone.models.registry import TRAINING_FREE_MODEL

    arch, backbone = TRAINING_FREE_MODEL.split("-", 1)
    return arch, backbone


def _find(rows: list[dict], size: int, kind: str, arch: str | None = None, backbone: str | None = None) -> dict | None:
    for row in rows:
        s = row["spec"]
        if row["size"] == size and s["kind"] == kind and not s.get("variant") \
                and (arch is None or s.get("arch") == arch) and (backbone is None or s.get("backbone") == backbone):
            return row
    return None


def check_targets(rows: list[dict], episode_target_ms: float) -> list[tuple[str, str]]:
    """[(PASS|FAIL|SKIP, line)] for the three targets."""
    out = []
    sg = _find(rows, 321, "model", "sgone", "vgg16")
    pub = _find(rows, 321, "published")
    if sg and pub:
        a, b = sg["modes"]["episode"][STAT], pub["modes"]["episode"][STAT]
        paired = " (paired, same process)" if sg.get("paired") else ""
        out.append(("PASS" if a <= b else "FAIL",
                    f"VGG-16 SG-One 1-shot episode at 321x321: {a:.0f} ms vs published forward {b:.0f} ms "
                    f"= {b / a:.2f}x the published speed{paired} (target: >= 1.00x)"))
    else:
        out.append(("SKIP", "VGG-16 SG-One vs published at 321x321: needs --backbones vgg16, --archs sgone, "
                            "size 321 and the published layout"))
    if sg:
        e, q = sg["modes"]["episode"][STAT], sg["modes"]["query"][STAT]
        out.append(("PASS" if e / q >= QUERY_TARGET else "FAIL",
                    f"VGG-16 SG-One cached-support query at 321x321: {q:.0f} ms vs episode {e:.0f} ms "
                    f"= {e / q:.2f}x faster (target: >= {QUERY_TARGET:.1f}x)"))
    else:
        out.append(("SKIP", "cached-support query vs episode: needs vgg16 sgone at 321"))
    arch, backbone = _default_model()
    d = _find(rows, 473, "model", arch, backbone)
    if d:
        e = d["modes"]["episode"][STAT]
        out.append(("PASS" if e < episode_target_ms else "FAIL",
                    f"default model ({arch}-{backbone}) 1-shot episode at 473x473: {e:.0f} ms "
                    f"(target: < {episode_target_ms:.0f} ms)"))
    else:
        out.append(("SKIP", f"default model episode at 473: needs {backbone} {arch} at size 473"))
    return out


def build_jobs(args: argparse.Namespace) -> list[dict]:
    jobs = []
    base = {"threads": args.threads, "device": args.device, "warmup": args.warmup,
            "repeats": args.repeats, "predictor": args.predictor}
    default_arch, default_backbone = _default_model()
    for size in args.sizes:
        published_done = not args.published
        for backbone in args.backbones:
            for arch in args.archs:
                if args.quick and not ((backbone, arch, size) in (("vgg16", "sgone", 321),)
                                       or (backbone, arch, size) == (default_backbone, default_arch, 473)):
                    continue
                subjects = [{"kind": "model", "arch": arch, "backbone": backbone, "layout": args.layout}]
                if backbone == "vgg16" and arch == "sgone" and not published_done:
                    subjects.append({"kind": "published"})  # timed interleaved with SG-One: a paired comparison
                    published_done = True
                jobs.append(dict(base, size=size, subjects=subjects))
        if not published_done and not (args.quick and size != 321):
            jobs.append(dict(base, size=size, subjects=[{"kind": "published"}]))
    return jobs


def render(rows: list[dict], header: list[str], predictor: bool) -> str:
    cols = ["model", "backbone", "weights", "size", "episode ms", "query ms"]
    cols += ["predict ms"] if predictor else []
    cols += ["speed-up", "GFLOPs/episode", "peak MiB episode", "peak MiB query"]
    lines = header + ["", "| " + " | ".join(cols) + " |",
                      "|" + "|".join(["---"] * 4 + ["---:"] * (len(cols) - 4)) + "|"]
    for row in rows:
        s, m = row["spec"], row["modes"]
        ep, q, pr = m["episode"], m.get("query"), m.get("predict")
        cells = [_spec_label(s), s.get("backbone", "vgg16"), row["weights"], f"{row['size']}x{row['size']}",
                 _fmt(ep[STAT]), _fmt(q and q[STAT])]
        if predictor:
            cells.append(_fmt(pr and pr[STAT]))
        cells += [f"{ep[STAT] / q[STAT]:.2f}x" if q else "-", _fmt(ep["gflops"], 1),
                  _fmt(ep["peak_mib"]), _fmt(q and q["peak_mib"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="sgone core speed and memory benchmark (see the module docstring)")
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                   help="square input sizes, comma-separated (default: %(default)s)")
    p.add_argument("--backbones", default=",".join(BACKBONES), help="default: %(default)s")
    p.add_argument("--archs", default=",".join(ARCHS), help="default: %(default)s")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per mode (default 5)")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="statistic of the timed calls shown and checked (default median; min is "
                        "the more robust estimate of the unloaded cost on a busy machine)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per mode first (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--quick", action="store_true",
                   help="only the configurations the targets need, 3 repeats")
    p.add_argument("--no-published", dest="published", action="store_false",
                   help="leave out the published SG-One layout")
    p.add_argument("--predictor", action="store_true", help="also time Predictor.predict on uint8 images")
    p.add_argument("--layout", choices=("inference", "plain"), default="inference",
                   help="inference (default): BatchNorm folded and channels-last where faster, as Predictor "
                        "and `sgone segment` run; plain: the model as built")
    p.add_argument("--episode-target-ms", type=float, default=DEFAULT_EPISODE_TARGET_MS,
                   help="target 3's limit (default %(default)s, for a 2-core CPU)")
    p.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    p.add_argument("--no-fail", action="store_true", help="exit 0 even when a target fails")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration (default 3600)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.backbones = [b for b in args.backbones.split(",") if b]
    args.archs = [a for a in args.archs.split(",") if a]
    bad = [b for b in args.backbones if b not in BACKBONES] + [a for a in args.archs if a not in ARCHS]
    if bad:
        p.error(f"unknown backbone/arch: {', '.join(bad)} (backbones: {', '.join(BACKBONES)}; archs: {', '.join(ARCHS)})")
    if args.quick and "--repeats" not in " ".join(argv or sys.argv[1:]):
        args.repeats = 3
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    import torch

    global STAT
    STAT = f"{args.stat}_ms"
    jobs = build_jobs(args)
    if not jobs:
        print("nothing to run: check --backbones, --archs and --sizes", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    calib = [matmul_gflops()] if args.device == "cpu" else []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows: list[dict] = []
    threads = memory_method = None
    t_start = time.perf_counter()
    for n, job in enumerate(jobs, 1):
        names = ", ".join(f"{_spec_label(s)} {s.get('backbone', 'vgg16')}" for s in job["subjects"])
        print(f"[{n}/{len(jobs)}] {names} at {job['size']}x{job['size']} ...", file=sys.stderr, flush=True)
        try:
            res = _run_worker(job, args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
            continue
        threads, memory_method = res["threads"], res["memory_method"]
        for entry in res["results"]:
            entry["paired"] = len(job["subjects"]) > 1
            rows.append(entry)
    if args.device == "cpu":
        calib.append(matmul_gflops())
    elapsed = time.perf_counter() - t_start

    cpu_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu_name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    header = [
        f"# sgone core speed ({args.device}, fp32, inference mode)",
        "",
        f"- torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs ({cpu_name}); "
        f"{args.stat} of {args.repeats} after {args.warmup} warm-up call(s); one fresh process per row group",
    ]
    if calib:
        loadavg = f"; 1-min load average {load:.1f} at the start" if load is not None else ""
        header.append(f"- machine load: 2048^3 fp32 matmul {calib[0]:.0f} GFLOP/s before, {calib[-1]:.0f} after "
                      f"(~{REFERENCE_MATMUL_GFLOPS:.0f} on an idle 2-core reference machine){loadavg}")
    header += [
        "- episode: support + query from [0,1] images to the upsampled probability; query: cached support "
        "prototype, encode + segment + upsample",
        f"- peak MiB: rise above the resting process during one call ({memory_method}); "
        "GFLOPs: FlopCounterMode (convolutions + matmuls, 2 per multiply-add)",
        "- weights: imagenet = the backbone's ImageNet file was found; random = random init (same cost). "
        "The sgone head is untrained either way.",
        "- models as registered (`sgone.models.registry.MODELS`), layout: " + (
            "inference (BatchNorm folded, channels-last for MobileNetV2/ResNet-50 on the CPU: what Predictor "
            "and `sgone segment` run)" if args.layout == "inference" else "plain (as built, BatchNorm unfolded)"),
    ]
    print(render(rows, header, args.predictor))
    print()
    verdicts = check_targets(rows, args.episode_target_ms)
    for verdict, line in verdicts:
        print(f"{verdict}: {line}")
    slow = [r for r in rows if "query" in r["modes"]
            and r["modes"]["episode"][STAT] / r["modes"]["query"][STAT] < QUERY_TARGET]
    if slow:
        print("note: cached query < {:.1f}x faster than the episode for: {}".format(
            QUERY_TARGET, ", ".join(f"{_spec_label(r['spec'])} {r['spec']['backbone']} {r['size']}" for r in slow)))
    if calib and min(calib) < 0.6 * REFERENCE_MATMUL_GFLOPS:
        print(f"note: the machine was busy (matmul {min(calib):.0f} GFLOP/s, reference ~{REFERENCE_MATMUL_GFLOPS:.0f}); "
              "absolute times are inflated, the paired ratios less so")
    print(f"(ran {elapsed / 60:.1f} min)")
    if args.json:
        payload = {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "torch": torch.__version__,
                   "threads": threads, "memory_method": memory_method, "matmul_gflops": calib,
                   "load_average": load, "rows": rows,
                   "targets": [{"verdict": v, "line": line} for v, line in verdicts]}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    failed = any(v == "FAIL" for v, _ in verdicts)
    return 1 if failed and not args.no_fail else 0


if __name__ == "__main__":
    raise SystemExit(main())
