"""Frame rate of `sgone video` at 480p, in every mode, with the default model.

A generated 854x480 clip (`sgone.video.synthetic_clip`: a textured object moving and scaling
over a real photo) is written as JPEG frames with its first mask; then `run_video` - the code
behind `sgone video` - segments it exactly as the command would (read JPEG, predict, write the
mask PNG, overlay, H.264 encode, GIF preview), once per mode and input size. Reported:

    end-to-end fps   frames written / wall time of run_video (what the progress bar shows)
    predict fps      frames / time spent inside the predictor (and the propagate update)
    J                mean region similarity against the generated clip's true masks
                     (frames 1..n-1; a sanity check that the timed run tracks the object)

Input sizes: the CLI default (--size 473: the longer side scaled to 473, so 473x266 for 480p)
and --size 0 (native 854x480). Runs are interleaved (independent, propagate, temporal, independent, ...)
so that a change in machine load hits every mode alike; medians over `--repeats`. The header
prints a 2048^3 fp32 matmul rate: far below ~200 GFLOP/s means the machine was busy.

    python benchmarks/video_speed.py                    # 24 frames, sizes 473 and 0, 1 repeat
    python benchmarks/video_speed.py --frames 48 --repeats 3 --json video_speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import matmul_gflops

from sgone.video.tracker import MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames in the generated clip (default 24)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[473, 0], help="--size values (0 = native; default 473 0)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; medians reported")
    parser.add_argument("--model", default=None, help="model name (default: the CLI default)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: sgone video's, cores - 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-try", action="append", default=[], metavar="NAME=V[;NAME=V]",
                        help="also time the memory mode with these settings (repeatable), interleaved with the rest")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    import torch

    from sgone.engine.video_metrics import jaccard
    from sgone.video import run_video, synthetic_clip, write_clip
    from sgone.video.label_memory import LabelMemoryConfig
    from sgone.video.model import default_threads, video_predictor

    # (label, mode, config): the modes with their defaults, then the memory mode's variants
    runs_of = [(m, m, None) for m in args.modes] + [(f"memory {spec}", "memory", _memory_config(LabelMemoryConfig, spec))
                                                      for spec in args.memory_try]

    torch.set_num_threads(args.threads or default_threads())
    height, width = 480, 854
    gflops_before = matmul_gflops()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sgone-video-speed-") as tmp:
        tmp = Path(tmp)
        write_clip(tmp / "frames", synthetic_clip(args.frames, (height, width), seed=0), image_format="jpg", masks_folder=tmp / "truth")
        truth = tmp / "truth"
        from sgone.io import read_mask

        for size in args.sizes:
            t0 = time.perf_counter()
            predictor = video_predictor(args.model, device=args.device, size=size, allow_untrained=True)  # speed only
            load_s = time.perf_counter() - t0
            runs: dict[str, list[dict]] = {label: [] for label, _, _ in runs_of}
            for rep in range(args.repeats):
                for n, (label, mode, config) in enumerate(runs_of):
                    out = tmp / f"out-{size}-{n}-{rep}"
                    s = run_video(predictor, tmp / "frames", truth / "00000.png", out, mode=mode, config=config, progress=False)
                    js = [jaccard(read_mask(out / "masks" / f"{i:05d}.png"), read_mask(truth / f"{i:05d}.png"))
                          for i in range(1, args.frames)]
                    runs[label].append({"fps": s.fps, "predict_fps": s.predict_fps, "seconds": s.seconds, "J": float(np.mean(js))})
            for mode in runs:
                r = runs[mode]
                rows.append({
                    "size": size, "input": f"{width}x{height}" if not size else "x".join(map(str, _input_hw(height, width, size)[::-1])),
                    "mode": mode, "fps": statistics.median(x["fps"] for x in r),
                    "predict_fps": statistics.median(x["predict_fps"] for x in r),
                    "J": statistics.median(x["J"] for x in r), "model_load_s": load_s, "repeats": len(r),
                })
    gflops_after = matmul_gflops()
    threads = torch.get_num_threads()
    print(f"# sgone video speed at 480p ({width}x{height}), {args.frames} frames")
    print()
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{threads} threads, device {args.device}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"- machine load: 2048^3 fp32 matmul {gflops_before:.0f} GFLOP/s before, {gflops_after:.0f} after "
          f"(~200 on an idle 2-core reference machine)" + (f"; load average {load[0]:.1f}" if load else ""))
    print(f"- model: {args.model or 'default'}; end-to-end = read JPEG + predict + write mask + overlay + H.264 + GIF")
    print()
    print("| --size | network input | mode | end-to-end fps | predict fps | J (sanity) |")
    print("|---:|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {r['input']} | {r['mode']} | {r['fps']:.2f} | {r['predict_fps']:.2f} | {r['J']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "frames": args.frames, "threads": threads,
                                               "matmul_gflops": [gflops_before, gflops_after]}, indent=2) + "\n")
    return 0


def _memory_config(config_cls, spec: str):
    """'long_term=2;long_pool=1' -> the memory mode's config with those settings (typed as its fields)."""
    from dataclasses import fields

    types = {f.name: f.type for f in fields(config_cls)}
    values = {}
    for part in spec.split(";"):
        name, _, value = part.partition("=")
        if name not in types:
            raise SystemExit(f"--memory-try {spec}: unknown setting {name}")
        values[name] = {"int": int, "str": str}.get(types[name], float)(value)
    return config_cls(**values)


def _input_hw(h: int, w: int, size: int) -> tuple[int, int]:
    from sgone.inputs import input_size

    return input_size(h, w, size)


if __name__ == "__main__":
    sys.exit(main())
