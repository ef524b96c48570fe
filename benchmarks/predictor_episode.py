"""A user's 1-shot episode through `Predictor` at 473x473: set_support + predict, with and without
the inference optimisations (BatchNorm folded, channels-last CPU layout). Median of 6.

Run: python benchmarks/predictor_episode.py [--model prototype-mobilenet_v2] [--size 473]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from sgone.samples import sample_paths
from sgone.io import read_image, read_mask
from sgone.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="prototype-mobilenet_v2",
                        help="default: the training-free model (the figures in docs/results.md)")
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    paths = sample_paths()
    n = args.size
    support = np.asarray(Image.fromarray(read_image(paths["support"])).resize((n, n)))
    mask = np.asarray(Image.fromarray(read_mask(paths["support_mask"])).resize((n, n), Image.NEAREST))
    query = np.asarray(Image.fromarray(read_image(paths["query"])).resize((n, n)))
    print(f"| Predictor | 1-shot episode at {n}x{n}, median ms |\n|---|---|")
    for fuse in (False, True):
        predictor = Predictor(args.model, size=n, fuse=fuse, allow_untrained=True)  # speed only
        predictor.set_support([support], [mask])
        predictor.predict(query)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictor.set_support([support], [mask])
            predictor.predict(query)
            times.append(time.perf_counter() - start)
        label = "BatchNorm folded + channels-last" if fuse else "plain (fuse=False)"
        print(f"| {label} | {1000 * sorted(times)[len(times) // 2]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
