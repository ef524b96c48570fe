"""How fast the `synthetic` benchmark generates 1-shot episodes on one core, with and without cache.

Runs pinned to one CPU with numpy/torch at one thread, and times three passes over the same
episodes of fold 0 (a query and one support each, drawn by `sgone.data.sampler.TrainEpisodes`):
    render       no disk cache: every image is rendered from its key
    cache cold   rendered and written to a fresh cache folder
    cache warm   a new source reads the images back from that folder
Wall-clock and CPU time are both printed: on a busy machine the CPU time is the fairer number.
It also writes a sample grid (`--grid`): per row one class, image and label map side by side
(white = the class, gray = other classes, orange = the 255 band).

    python benchmarks/synthetic_speed.py [--episodes 400] [--size 160] [--grid /tmp/synthetic_grid.png]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one core means one thread

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from sgone.data.synthetic import CLASS_TABLE, SyntheticSource, _assets  # noqa: E402


def pin_one_core() -> str:
    """Pin this process to one of the CPUs it may use (Linux); say which."""
    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "unpinned"


def episode_loader(source: SyntheticSource, episodes: int):
    """A function loading 1-shot episode i: the sampler's if it exists, else an equivalent pair of loads."""
    try:
        from sgone.data.sampler import TrainEpisodes

        dataset = TrainEpisodes(source, fold=0, shots=1, ways=1, seed=0, length=episodes)
        return lambda i: dataset[i], "sgone.data.sampler.TrainEpisodes"
    except ImportError:
        rng = np.random.default_rng(0)
        classes = source.classes(0, "train")
        specs = []
        for _ in range(episodes):
            c = classes[int(rng.integers(len(classes)))]
            keys = source.items("train", c)
            a, b = rng.choice(len(keys), 2, replace=False)
            specs.append((c, keys[a], keys[b]))
        return lambda i: (source.load(specs[i][1], specs[i][0]), source.load(specs[i][2], specs[i][0])), "load()"


def timed(source: SyntheticSource, episodes: int) -> tuple[float, float, str]:
    load, how = episode_loader(source, episodes)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(episodes):
        load(i)
    return time.perf_counter() - wall, time.process_time() - cpu, how


def write_grid(path: str, size: int, seed: int) -> None:
    """Two classes per fold, three images each: image | label map (white class, gray others, orange band)."""
    from PIL import Image

    source = SyntheticSource(seed=seed, image_size=size)
    rows, labels = [], []
    for fold in range(4):
        for c in (10 * fold + 1, 10 * fold + 7):
            row, text = [], []
            for i in range(3):
                image, lab = source.scene(f"val/{c:02d}/{i:04d}")
                vis = np.zeros(image.shape, np.uint8)
                vis[(lab > 0) & (lab != 255)] = (110, 110, 110)
                vis[lab == c] = (255, 255, 255)
                vis[lab == 255] = (255, 150, 0)
                row += [image, vis]
                text += [f"{c}: {CLASS_TABLE[c - 1]}" if i == 0 else "", ""]
            rows.append(row)
            labels.append(text)
    try:
        from sgone.viz import tile_grid

        grid = tile_grid(rows, labels, tile=size)
    except ImportError:  # plain grid without captions
        grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    Image.fromarray(grid).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default="/tmp/synthetic_grid.png", help="sample grid PNG ('' = none)")
    args = parser.parse_args()

    where = pin_one_core()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    start = time.perf_counter()
    _assets()
    print(f"synthetic benchmark, {args.size} px, 1-shot 1-way episodes (2 images each), {where}, 1 thread")
    print(f"  assets loaded once per process: {time.perf_counter() - start:.2f} s")
    cache = tempfile.mkdtemp(prefix="sgone-synthetic-")
    try:
        runs = [("render (no cache)", SyntheticSource(seed=args.seed, image_size=args.size)),
                ("cache cold (render + write)", SyntheticSource(seed=args.seed, image_size=args.size, cache_dir=cache)),
                ("cache warm (read)", SyntheticSource(seed=args.seed, image_size=args.size, cache_dir=cache))]
        for name, source in runs:
            wall, cpu, how = timed(source, args.episodes)
            print(f"  {name:28s} {args.episodes / wall:7.1f} episodes/s wall, {args.episodes / cpu:7.1f} per CPU-s "
                  f"({1000 * wall / args.episodes:.1f} ms/episode)")
        print(f"  episodes drawn by {how}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if args.grid:
        write_grid(args.grid, args.size, args.seed)
        print(f"  sample grid: {args.grid}")


if __name__ == "__main__":
    main()
