"""Time of a user's 1-shot episode (set_support + predict through `Predictor`, longer side 473) for
the default, DINOv2 at several tiling settings, and the fused model, side by side in one run.
Median of --repeats; the ratio column is against the default measured in the same run.

Run: python benchmarks/dinov2_speed.py [--repeats 5] [--models NAME,NAME]   (registered names; the
default is always measured, first; without --models every row below)
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from sgone.samples import sample_paths
from sgone.io import read_image, read_mask
from sgone.models.fused import FusedPrototypeModel
from sgone.models.registry import TRAINING_FREE_MODEL, build_model, load_model
from sgone.predictor import Predictor

# (label, tiled canvas's longer side, tile stride); 224 = the global view alone
TILINGS = (("224 (one tile)", 224, 224), ("448 / stride 224", 448, 224), ("448 / stride 112", 448, 112),
           ("672 / stride 224", 672, 224), ("448, whole image", 448, 0), ("336, whole image", 336, 0))


def episode_ms(model, support, mask, query, repeats: int) -> float:
    predictor = Predictor(model, size=473)
    predictor.set_support([support], [mask])
    predictor.predict(query)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.set_support([support], [mask])
        predictor.predict(query)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default=None, help="comma list of registered names (skips the tiling rows)")
    args = parser.parse_args()
    paths = sample_paths()
    support, mask, query = read_image(paths["support"]), read_mask(paths["support_mask"]), read_image(paths["query"])
    models = {TRAINING_FREE_MODEL: load_model(TRAINING_FREE_MODEL)}
    for label, resolution, stride in TILINGS if args.models is None else ():
        options = {"resolution": resolution, "tile_stride": stride}
        models[f"prototype-dinov2_s14, {label}"] = build_model("prototype", "dinov2_s14", levels=("low",),
                                                               backbone_options=options)
    names = ("prototype-dinov2_s14", "prototype-dinov2_s14-mobilenet_v2", "prototype-dinov2_s14-mobilenet_v2-224",
             "prototype-dinov2_s14-mobilenet_v2-whole", "prototype-dinov2_s14-mobilenet_v2-whole-int8",
             "sgone-dinov2_s14-mobilenet_v2-real")
    for name in names if args.models is None else [n for n in args.models.split(",") if n]:
        models[name] = load_model(name)
    print(f"| model | grid (patches) | 1-shot episode, median ms | x default |\n|---|---|---|---|")
    base = None
    for name, model in models.items():
        ms = episode_ms(model, support, mask, query, args.repeats)
        base = base or ms
        dino = model.semantic.backbone if isinstance(model, FusedPrototypeModel) else model.backbone
        dino = getattr(dino, "semantic", dino)  # a JointBackbone's DINOv2 part
        grid = f"{dino.resolution // 14}" if dino.name == "dinov2_s14" else "-"
        print(f"| {name} | {grid} | {ms:.0f} | {ms / base:.1f} |", flush=True)


if __name__ == "__main__":
    main()
