"""Peak memory and time of `sgone segment` on one very large query (default 10000x10000).

Generates a query of --side x --side pixels (a red disc on a smooth, striped background, written
as PNG and as JPEG) and a 1000x1000 support of the same kind with its mask, then runs
`sgone segment` on each query file in a fresh Python process (the CLI in-process, default
model, default flags apart from those given here) and prints that process's peak resident
memory (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, which includes torch and the model), the
wall time, and the IoU of the written full-size mask against the disc. PNG is the worse case:
it has to be decoded at full size, while a JPEG is decoded at 1/2..1/8 scale.

    python benchmarks/big_image_memory.py                       # 10000x10000, PNG and JPEG
    python benchmarks/big_image_memory.py --side 4000 --formats png
    python benchmarks/big_image_memory.py --src /tmp/old-sgone  # another source tree (before/after)
    python benchmarks/big_image_memory.py --formats jpg --segment-flags "--zoom --self-support"

The images go to a temporary folder (or --workdir) that is removed afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Runs in the child process: segment one query, then report peak RSS and time as JSON.
CHILD = """
import json, resource, sys, time
import numpy as np
from PIL import Image
from sgone.cli import main
argv, truth = json.loads(sys.argv[1]), json.loads(sys.argv[2])
start = time.perf_counter()
rc = main(argv)
seconds = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
Image.MAX_IMAGE_PIXELS = None
mask = np.asarray(Image.open(truth["mask"])) == 255
side, cy, cx, r = truth["side"], truth["cy"], truth["cx"], truth["r"]
inter = union = 0
for top in range(0, side, 1000):
    y = np.arange(top, min(top + 1000, side))[:, None]
    disc = (y - cy) ** 2 + (np.arange(side)[None, :] - cx) ** 2 <= r * r
    inter += int((disc & mask[top:top + 1000]).sum())
    union += int((disc | mask[top:top + 1000]).sum())
print(json.dumps({"rc": rc, "seconds": seconds, "peak_mb": peak_mb, "iou": inter / max(union, 1)}))
"""


def scene_rows(side: int, top: int, bottom: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Rows top..bottom of the generated scene (uint8 RGB): stripes, a gradient, a red disc."""
    y = np.arange(top, bottom, dtype=np.float32)[:, None]
    x = np.arange(side, dtype=np.float32)[None, :]
    band = np.empty((bottom - top, side, 3), np.uint8)
    band[..., 0] = (100 + 40 * np.sin(x * 60 / side)).astype(np.uint8) + np.zeros_like(y, dtype=np.uint8)
    band[..., 1] = (110 + 40 * np.cos(y * 45 / side)).astype(np.uint8) + np.zeros_like(x, dtype=np.uint8)
    band[..., 2] = ((x + y) * 120 / (2 * side) + 60).astype(np.uint8)
    band[(y - cy) ** 2 + (x - cx) ** 2 <= r * r] = (225, 35, 40)
    return band


def make_scene(side: int, cy: float, cx: float, r: float) -> np.ndarray:
    image = np.empty((side, side, 3), np.uint8)
    for top in range(0, side, 1000):
        image[top:top + 1000] = scene_rows(side, top, min(top + 1000, side), cy, cx, r)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=10000, help="query width and height (default 10000)")
    parser.add_argument("--formats", default="png,jpg", help="query file formats to run (default png,jpg)")
    parser.add_argument("--size", type=int, default=473, help="sgone segment --size (default 473)")
    parser.add_argument("--threads", type=int, default=2, help="OMP/torch threads in the child (default 2)")
    parser.add_argument("--src", default=None, metavar="DIR", help="run the sgone found in DIR (default: installed)")
    parser.add_argument("--workdir", default=None, metavar="DIR", help="where to write the images (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated images and outputs")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--segment-flags", default="", metavar="FLAGS",
                        help='more `sgone segment` flags, e.g. "--zoom --self-support" (default none)')
    args = parser.parse_args(argv)

    from PIL import Image

    work = Path(args.workdir or tempfile.mkdtemp(prefix="sgone-big-"))
    work.mkdir(parents=True, exist_ok=True)
    side = args.side
    cy, cx, r = side * 0.45, side * 0.55, side * 0.2
    support = make_scene(1000, 450, 550, 200)
    Image.fromarray(support).save(work / "support.png")
    yy, xx = np.mgrid[0:1000, 0:1000]
    Image.fromarray((((yy - 450) ** 2 + (xx - 550) ** 2 <= 200 ** 2) * 255).astype(np.uint8)).save(
        work / "support_mask.png")
    Image.MAX_IMAGE_PIXELS = None
    query = make_scene(side, cy, cx, r)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for fmt in formats:
        start = time.perf_counter()
        Image.fromarray(query).save(work / f"query.{fmt}", **({"compress_level": 1} if fmt == "png" else
                                                              {"quality": 90}))
        print(f"wrote {work / f'query.{fmt}'} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    del query

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([args.src, env.get("PYTHONPATH", "")])
    rows = []
    for fmt in formats:
        out = work / f"out-{fmt}"
        argv_segment = ["segment", "--support", str(work / "support.png"), "--support-mask",
                        str(work / "support_mask.png"), "--input", str(work / f"query.{fmt}"), "--output", str(out),
                        "--size", str(args.size), "--device", "cpu", *args.segment_flags.split()]
        truth = {"mask": str(out / "query.png"), "side": side, "cy": cy, "cx": cx, "r": r}
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv_segment), json.dumps(truth)],
                              capture_output=True, text=True, env=env, cwd=work)  # cwd: no ./sgone shadows --src
        if proc.returncode != 0 or not proc.stdout.strip():
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            rows.append({"format": fmt, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        row = {"format": fmt, **json.loads(proc.stdout.strip().splitlines()[-1])}
        rows.append(row)

    print(f"\n`sgone segment` on one {side}x{side} query ({side * side / 1e6:.0f} megapixels), support 1000x1000, "
          f"--size {args.size}, {args.threads} threads" + (f", source {args.src}" if args.src else "")
          + (f", flags {args.segment_flags}" if args.segment_flags else ""))
    print("| query file | peak RSS (MB) | wall time (s) | mask IoU vs disc |")
    print("|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['format'].upper()} | failed: {row['error']} | | |")
        else:
            print(f"| {row['format'].upper()} | {row['peak_mb']:.0f} | {row['seconds']:.1f} | {row['iou']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
