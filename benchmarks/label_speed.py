"""Throughput, memory and resume of `sgone label`, each run as the command a user types.

Parts (`--parts`, default all):

    speed  `sgone segment` vs `sgone label --engine local` (no overlays) vs `--engine ray --workers 2`
           on the same generated images, interleaved per round so that machine load hits every
           row alike; median wall time of the whole command (start-up and model load included).
           Ray twice: starting its own local cluster (what a one-off command does) and joining a
           cluster started once with `ray start --head` (how a cluster is used; started with
           RAY_worker_niceness=0, as docs/labelling.md advises), and a third time starting its own
           cluster with Ray's default worker priority (nice 15) instead of the engine's. For the label
           rows the journal is polled too: "steady" is images/s from the first stored image to
           the last, i.e. without start-up (imports, cluster, model load in every worker).
    many   --many small generated images with `--engine local`: killed (SIGKILL) when the journal
           holds about half of them, then rerun; reports the peak RSS of each run (the process's
           ru_maxrss), what the rerun says is left, and how many finished images it redid.

    python benchmarks/label_speed.py                                  # 200 images x 2 rounds, 10,000 small
    OMP_NUM_THREADS=2 python benchmarks/label_speed.py --parts speed --images 200 --rounds 3
    python benchmarks/label_speed.py --parts many --many 10000 --json label_speed.json

Every command runs with this interpreter (`python -m sgone`), the training-free model
`prototype-mobilenet_v2` and --device cpu. On a shared machine the header's matmul rate says how
busy it was (about 200 GFLOP/s idle on the 2-core reference machine).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import matmul_gflops

MODEL = "prototype-mobilenet_v2"
ROOT = Path(__file__).resolve().parents[1]


def scene(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A red disc at a seeded place on a noisy striped background -> (image, {0,1} disc mask)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([np.sin(x / 3.0 + seed) * 40 + 100, np.cos(y / 4.0) * 40 + 110,
                      (x + y) % 16 * 6 + 60.0], axis=2) + rng.normal(0, 10, (h, w, 3))
    r = min(h, w) * rng.uniform(0.15, 0.3)
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    disc = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    image[disc] = (230, 40, 40)
    return np.clip(image, 0, 255).astype(np.uint8), disc.astype(np.uint8)


def make_collection(folder: Path, count: int, hw: tuple[int, int], suffix: str, flat: bool = False) -> Path:
    """support.png, support_mask.png and `count` query images under folder/photos (100 per
    subfolder, or all in it when `flat`: `sgone segment` does not recurse)."""
    from PIL import Image

    support, mask = scene(*hw, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(support).save(folder / "support.png")
    Image.fromarray(mask * 255).save(folder / "support_mask.png")
    for i in range(count):
        sub = folder / "photos" / ("" if flat else f"{i // 100:03d}")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene(*hw, seed=i + 1)[0]).save(sub / f"q{i:05d}{suffix}", quality=90)
    return folder


def journal_lines(output: Path) -> int:
    """Complete lines in an output folder's journal (images stored so far)."""
    try:
        with open(output / ".sgone-label" / "results.jsonl", "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def sgone(*args: str, kill_when=None, env=None, watch: Path | None = None) -> dict:
    """Run `python -m sgone ARGS`; -> wall seconds, peak RSS (MiB), output, return code.

    kill_when: a function polled every 50 ms; when it returns True the command is SIGKILLed.
    watch: a `sgone label` output folder; the times of its first and last stored image are
    returned ("first_s", "last_s"), so start-up and steady throughput can be told apart.
    """
    start = time.perf_counter()
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty command cannot block on it
    proc = subprocess.Popen([sys.executable, "-m", "sgone", *args], stdout=log, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=ROOT, start_new_session=True)
    killed, first, last, seen = False, None, None, 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # wait4: this command's own peak RSS
        if pid:
            break
        if kill_when is not None and not killed and kill_when():
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        if watch is not None:
            count = journal_lines(watch)
            if count > seen:
                first = first or time.perf_counter() - start
                last, seen = time.perf_counter() - start, count
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    out = log.read()
    log.close()
    wall = time.perf_counter() - start
    if proc.returncode != 0 and not killed:
        raise SystemExit(f"failed ({proc.returncode}): sgone {' '.join(args)}\n{out[-3000:]}")
    if watch is not None and journal_lines(watch) > seen:
        last = wall  # the last images were stored after the final poll
    return {"seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "output": out, "killed": killed,
            "first_s": first, "last_s": last}


def common(folder: Path, size: int) -> list[str]:
    return ["--support", str(folder / "support.png"), "--support-mask", str(folder / "support_mask.png"),
            "--model", MODEL, "--size", str(size), "--device", "cpu"]


def speed(args, work: Path) -> dict:
    folder = make_collection(work / "speed", args.images, (args.height, args.width), ".jpg", flat=True)
    base = common(folder, args.size)
    photos = str(folder / "photos")
    ray_bin = Path(sys.executable).parent / "ray"
    port = "6391"
    rows = {"segment": [], "label local": [], "label ray (own cluster)": [], "label ray (own, nice 15)": [],
            "label ray (joined cluster)": []}
    steady = {name: [] for name in rows}
    joined = False
    if ray_bin.exists():
        subprocess.run([str(ray_bin), "start", "--head", "--disable-usage-stats", f"--port={port}", f"--num-cpus={args.workers}",
                        "--include-dashboard=false"], check=True, capture_output=True,
                       env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_worker_niceness": "0"})
        joined = True
    try:
        for r in range(args.rounds):
            runs = {
                "segment": ["segment", *base, "--query", photos, "--output", str(work / f"seg{r}")],
                "label local": ["label", *base, "--input", photos, "--output", str(work / f"local{r}"),
                                "--batch-size", str(args.batch_size), "--quiet"],
                "label ray (own cluster)": ["label", *base, "--input", photos, "--output", str(work / f"ray{r}"),
                                            "--engine", "ray", "--workers", str(args.workers),
                                            "--batch-size", str(args.batch_size), "--quiet"],
                "label ray (own, nice 15)": ["label", *base, "--input", photos, "--output", str(work / f"rayn{r}"),
                                             "--engine", "ray", "--workers", str(args.workers),
                                             "--batch-size", str(args.batch_size), "--quiet"],
                "label ray (joined cluster)": ["label", *base, "--input", photos, "--output", str(work / f"rayj{r}"),
                                               "--engine", "ray", "--workers", str(args.workers),
                                               "--address", f"127.0.0.1:{port}", "--batch-size", str(args.batch_size),
                                               "--quiet"],
            }
            for name, argv in runs.items():
                if name.startswith("label ray") and not ray_bin.exists():
                    continue
                if name == "label ray (joined cluster)" and not joined:
                    continue
                # joining a cluster that uses Ray's token authentication (its default) takes RAY_AUTH_MODE=token
                env = {**os.environ, "RAY_AUTH_MODE": "token"} if "joined" in name else None
                if "nice 15" in name:  # Ray's own default, which the engine overrides for the cluster it starts
                    env = {**os.environ, "RAY_worker_niceness": "15"}
                watch = Path(argv[argv.index("--output") + 1]) if name.startswith("label") else None
                result = sgone(*argv, env=env, watch=watch)
                rows[name].append(result["seconds"])
                note = ""
                if watch is not None and result["first_s"] is not None and result["last_s"] > result["first_s"]:
                    steady[name].append((args.images - 1) / (result["last_s"] - result["first_s"]))
                    note = (f" (first image stored at {result['first_s']:.1f} s, then "
                            f"{steady[name][-1]:.1f} images/s)")
                print(f"  round {r + 1} {name}: {result['seconds']:.1f} s{note}", flush=True)
    finally:
        if joined:
            subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True)
    # the engines agree: same annotations from local and ray
    same = None
    if rows["label ray (own cluster)"]:
        same = (work / "local0" / "annotations.json").read_text() == (work / "ray0" / "annotations.json").read_text()
    table = {name: {"median_s": statistics.median(t), "runs_s": [round(x, 2) for x in t],
                    "images_per_s": args.images / statistics.median(t),
                    "steady_images_per_s": statistics.median(steady[name]) if steady[name] else None}
             for name, t in rows.items() if t}
    return {"images": args.images, "hw": [args.height, args.width], "size": args.size, "rounds": args.rounds,
            "workers": args.workers, "batch_size": args.batch_size, "rows": table, "ray_equals_local": same}


def many(args, work: Path) -> dict:
    start = time.perf_counter()
    folder = make_collection(work / "many", args.many, (args.many_height, args.many_width), ".png")
    made = time.perf_counter() - start
    out = work / "many-out"
    argv = ["label", *common(folder, args.many_size), "--input", str(folder / "photos"), "--output", str(out),
            "--batch-size", str(args.batch_size), "--quiet"]
    journal = out / ".sgone-label" / "results.jsonl"

    first = sgone(*argv, kill_when=lambda: journal_lines(out) >= args.many // 2)
    finished = set()
    for line in journal.read_text().splitlines():
        try:
            finished.add(json.loads(line)["key"])
        except json.JSONDecodeError:
            pass
    count_before = len(journal.read_text().splitlines())
    second = sgone(*argv)
    said = re.search(r"(\d+) done before, (\d+) left", second["output"])
    redo = [json.loads(line)["key"] for line in journal.read_text().splitlines()[count_before:]]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    coco = json.loads((out / "annotations.json").read_text())
    return {"images": args.many, "hw": [args.many_height, args.many_width], "size": args.many_size,
            "generate_s": round(made, 1),
            "killed_run": {"killed": first["killed"], "seconds": round(first["seconds"], 1),
                           "peak_rss_mib": round(first["peak_rss_mib"]), "finished_at_kill": len(finished)},
            "rerun": {"seconds": round(second["seconds"], 1), "peak_rss_mib": round(second["peak_rss_mib"]),
                      "said_done_before": int(said.group(1)), "said_left": int(said.group(2)),
                      "labelled": len(redo), "redone_finished": len(set(redo) & finished),
                      "images_per_s": round(len(redo) / second["seconds"], 1)},
            "index_lines": len(index), "index_done": sum(line["status"] == "done" for line in index),
            "coco_images": len(coco["images"]), "coco_annotations": len(coco["annotations"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("speed", "many"), default=["speed", "many"])
    parser.add_argument("--images", type=int, default=200, help="images of the speed part (default 200)")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--size", type=int, default=320, help="--size of the speed part (default 320)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the speed part; medians reported")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--many", type=int, default=10000, help="images of the memory/resume part (default 10,000)")
    parser.add_argument("--many-height", type=int, default=48)
    parser.add_argument("--many-width", type=int, default=64)
    parser.add_argument("--many-size", type=int, default=64, help="--size of the memory/resume part (default 64)")
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one, removed)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sgone-label-bench-"))
    report = {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "matmul_gflops_before": round(matmul_gflops(), 1)}
    print(f"{report['cpus']} CPUs, OMP_NUM_THREADS={report['omp_num_threads']}, "
          f"matmul {report['matmul_gflops_before']} GFLOP/s", flush=True)
    try:
        if "speed" in args.parts:
            report["speed"] = s = speed(args, work)
            print(f"\n{s['images']} images {s['hw'][1]}x{s['hw'][0]}, --size {s['size']}, batch {s['batch_size']}, "
                  f"medians of {s['rounds']} round(s)")
            print(f"{'command':30s} {'median s':>9s} {'images/s':>9s} {'steady/s':>9s}  runs")
            for name, row in s["rows"].items():
                steady = f"{row['steady_images_per_s']:9.1f}" if row["steady_images_per_s"] else f"{'-':>9s}"
                print(f"{name:30s} {row['median_s']:9.1f} {row['images_per_s']:9.1f} {steady}  {row['runs_s']}")
            rows = s["rows"]
            if "label local" in rows and "segment" in rows:
                s["local_vs_segment"] = rows["segment"]["median_s"] / rows["label local"]["median_s"]
                print(f"label local / segment throughput: {s['local_vs_segment']:.2f}x (target >= 0.9)")
            for name in ("label ray (own cluster)", "label ray (own, nice 15)", "label ray (joined cluster)"):
                if name in rows:
                    s[f"{name} vs local"] = rows["label local"]["median_s"] / rows[name]["median_s"]
                    print(f"{name} / label local throughput: {s[f'{name} vs local']:.2f}x (target >= 0.8)")
                    steady_ratio = (rows[name]["steady_images_per_s"] or 0) / (rows["label local"]["steady_images_per_s"] or 1)
                    s[f"{name} vs local, steady"] = steady_ratio
                    print(f"{name} / label local, steady (first to last image stored): {steady_ratio:.2f}x")
            print(f"ray annotations.json == local annotations.json: {s['ray_equals_local']}")
        if "many" in args.parts:
            report["many"] = m = many(args, work)
            k, r = m["killed_run"], m["rerun"]
            print(f"\n{m['images']} images {m['hw'][1]}x{m['hw'][0]}, --size {m['size']} (generated in {m['generate_s']} s)")
            print(f"killed run: SIGKILL after {k['seconds']} s with {k['finished_at_kill']} finished; "
                  f"peak RSS {k['peak_rss_mib']} MiB")
            print(f"rerun: said {r['said_done_before']} done before, {r['said_left']} left; labelled {r['labelled']}, "
                  f"redid {r['redone_finished']} finished image(s); {r['seconds']} s ({r['images_per_s']} images/s); "
                  f"peak RSS {r['peak_rss_mib']} MiB")
            print(f"index.jsonl: {m['index_lines']} lines, {m['index_done']} done; annotations.json: "
                  f"{m['coco_images']} images, {m['coco_annotations']} annotations")
        report["matmul_gflops_after"] = round(matmul_gflops(), 1)
        print(f"\nmatmul after: {report['matmul_gflops_after']} GFLOP/s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
