"""Does a larger view of the query help the default's fold models on small objects? (issue 26)

The zoom step (`--zoom`) loses on the held-out folds (small_objects.py). This checks why, by three
ways of seeing the query larger, each against the first pass at --size (the episodes, fold models
and cached support prototypes of small_objects.py, 1-shot):

- crops: the zoom step's candidate boxes (`sgone.ops.candidate_boxes` with the Predictor's
  constants), each crop encoded at --magnifications x the first pass's scale (MobileNetV2 input and
  DINOv2 canvas alike; boxes grown so that DINOv2 sees at least one 224 tile) and pasted back by
  three rules: replace, mean and min. min can only remove pixels, so a loss under min means the
  crop's reading misses the object itself, not that it finds look-alikes around it.
- whole: the whole query with MobileNetV2 at --sizes (DINOv2's canvas stays at its 448).
- semantic: the whole query with DINOv2's canvas at --dinov2-resolutions (MobileNetV2 at --size).

Prints mIoU (HSNet-style, the fold's test classes), foreground IoU by object share (as
small_objects.py) and the seconds each extra encode took.

    R="--root ../shared/data/ccp --root ../shared/data/coco128 --root ../shared/data/camvid"
    python benchmarks/small_objects_scale.py $R --runs runs/davis-1200 --folds F --episodes 100 --out sF.json
    python benchmarks/small_objects_scale.py --tables s*.json   # the folds side by side, their mean
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_objects import Episode, fold_model  # noqa: E402
from sgone import ops  # noqa: E402
from sgone import predictor as predictors  # noqa: E402
from sgone.backbones.dinov2 import PATCH, TILE  # noqa: E402
from sgone.data.mix import MixSource  # noqa: E402
from sgone.data.sampler import TestEpisodes  # noqa: E402
from sgone.engine.cached_episodes import LabelMaps  # noqa: E402
from sgone.engine.metrics import IoUAccumulator, by_object_size, object_share  # noqa: E402
from sgone.inputs import image_tensor, input_size  # noqa: E402
from sgone.io import atomic_write  # noqa: E402

RULES = ("replace", "mean", "min")


def paste(prob: torch.Tensor, parts: list, rule: str) -> torch.Tensor:
    """(1,H,W) first pass with each (box, (1,h,w) crop scores) pasted back by `rule`: replace and mean
    are `ops.paste_box`'s weights 1 and 0.5 (the zoom step's paste), min keeps the lower score."""
    out = prob.clone()
    for (t, l, b, r), part in parts:
        if rule == "min":
            out[:, t:b, l:r] = torch.minimum(out[:, t:b, l:r], part)
        else:
            ops.paste_box(out, part, (t, l, b, r), 1.0 if rule == "replace" else 0.5, inplace=True)
    return out


def encode_at(model, image: np.ndarray, size: int, dinov2_resolution: int) -> dict[str, torch.Tensor]:
    """The model's encoding of `image` with MobileNetV2's longer side `size` and DINOv2's canvas
    `dinov2_resolution` (restored afterwards)."""
    dino = model.backbone.semantic
    kept = dino.resolution
    dino.resolution = dinov2_resolution
    try:
        return model.encode(image_tensor(np.ascontiguousarray(image), input_size(*image.shape[:2], size)))
    finally:
        dino.resolution = kept


def views(ep: Episode, image: np.ndarray, prob: torch.Tensor, args, seconds: dict) -> dict[str, torch.Tensor]:
    """name -> (1,H,W) scores of each larger view of one episode's query."""
    model, (h, w) = ep.model, ep.hw
    dino_base = model.backbone.semantic.resolution
    out = {"first pass": prob}

    def timed(name, fn):
        tick = time.perf_counter()
        value = fn()
        total, count = seconds.get(name, (0.0, 0))
        seconds[name] = (total + time.perf_counter() - tick, count + 1)
        return value

    for mag in args.magnifications:
        # the crop's scale: mag x the first pass's (longer side `size` / max(h, w)), DINOv2's likewise
        min_side = min(int(np.ceil(TILE / (mag * dino_base / max(h, w)))), h, w)
        boxes = ops.candidate_boxes(prob.amax(0), predictors.ZOOM_LOW, predictors.ZOOM_MARGIN, predictors.ZOOM_CROPS,
                                    min_side=min_side)
        parts = []
        for t, l, b, r in boxes:
            side = max(b - t, r - l)
            dino_res = max(TILE, int(round(mag * dino_base * side / max(h, w) / PATCH)) * PATCH)
            size = max(32, int(round(mag * args.size * side / max(h, w))))
            enc = timed(f"crop x{mag}", lambda: encode_at(model, image[t:b, l:r], size, dino_res))
            parts.append(((t, l, b, r), ep.score(enc, (b - t, r - l))))
        for rule in RULES:
            out[f"crops x{mag} {rule}"] = paste(prob, parts, rule)
    for size in args.sizes:
        enc = timed(f"whole {size}", lambda: encode_at(model, image, size, dino_base))
        out[f"whole, MobileNetV2 at {size}"] = ep.score(enc, ep.hw)
    for res in args.dinov2_resolutions:
        enc = timed(f"semantic {res}", lambda: encode_at(model, image, args.size, res))
        out[f"whole, DINOv2 canvas {res}"] = ep.score(enc, ep.hw)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", default=[])
    parser.add_argument("--runs", help="folder with fold<F>/last.pt")
    parser.add_argument("--folds", default="0")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=353)
    parser.add_argument("--head-weight", type=float, default=0.25)
    parser.add_argument("--magnifications", type=float, nargs="*", default=[1.5, 2.5])
    parser.add_argument("--sizes", type=int, nargs="*", default=[473, 609])
    parser.add_argument("--dinov2-resolutions", type=int, nargs="*", default=[672])
    parser.add_argument("--feature-cache", default="auto")
    parser.add_argument("--out", type=Path, help="results.json")
    parser.add_argument("--tables", nargs="+", type=Path, metavar="JSON",
                        help="print earlier runs' --out files as one table (their folds merged) and stop")
    args = parser.parse_args()
    if args.tables:
        print_table(args.tables)
        return
    if not args.root or not args.runs:
        parser.error("--root and --runs are needed (or --tables)")
    for res in args.dinov2_resolutions:
        if res < TILE or res % PATCH:
            parser.error(f"--dinov2-resolutions: {res} is not a multiple of {PATCH} of at least {TILE}")
    torch.set_grad_enabled(False)
    from tqdm import tqdm

    source = MixSource(args.root)
    labels = LabelMaps(source, args.size)
    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "folds": {}}
    for fold in [int(f) for f in args.folds.split(",")]:
        path = Path(args.runs) / f"fold{fold}" / "last.pt"
        model, cache = fold_model(path, fold, args.head_weight, args.feature_cache, args.size)
        if not hasattr(model.backbone, "semantic"):
            sys.exit(f"{path}: not a DINOv2 + CNN model (no semantic backbone)")
        test = source.classes(fold, "test")
        specs = TestEpisodes(source, fold, shots=1, episodes=args.episodes, seed=args.seed).specs
        scored: dict[str, tuple[IoUAccumulator, list]] = {}
        seconds: dict[str, tuple[float, int]] = {}
        for spec in tqdm(specs, desc=f"fold {fold}", leave=False, dynamic_ncols=True):
            ep = Episode(model, source, spec, cache, labels, args.size)
            image = ep.image({})  # read once, checked against the label's size
            share = object_share(ep.label)
            for name, prob in views(ep, image, ep.score(ep.encoded, ep.hw), args, seconds).items():
                acc, sizes = scored.setdefault(name, (IoUAccumulator(), []))
                sizes.append((share, acc.add((prob[0] > 0.5).long(), ep.label, spec["class_ids"])))
        row = results["folds"].setdefault(str(fold), {})
        print(f"\nfold {fold}, 1-shot, {len(specs)} episodes\n")
        print("| view | mIoU | <2 % | 2-10 % | >=10 % |\n|---|---:|---:|---:|---:|")
        for name, (acc, sizes) in scored.items():
            pooled = by_object_size(sizes)
            row[name] = {"miou": 100 * acc.miou(test), "object_sizes": sizes}
            print(f"| {name} | {100 * acc.miou(test):.1f} | "
                  + " | ".join(f"{v['fg_iou']:.1f} ({v['episodes']})" for v in pooled.values()) + " |")
        row["seconds per extra encode"] = {k: t / n for k, (t, n) in seconds.items()}
        print("\nseconds per extra encode: " + ", ".join(f"{k} {t / n:.2f}" for k, (t, n) in seconds.items()),
              flush=True)
        if args.out:
            atomic_write(args.out, json.dumps(results, indent=1) + "\n")


def print_table(paths: list[Path]) -> None:
    """The views of several runs' folds: mIoU per fold, its mean, and foreground IoU by object share
    with the folds' episodes pooled."""
    folds: dict[str, dict] = {}
    for path in paths:
        folds.update(json.loads(path.read_text())["folds"])
    names = sorted(folds)
    views = [v for v in folds[names[0]] if v != "seconds per extra encode" and all(v in folds[f] for f in names)]
    print("| view | " + " | ".join(f"fold {f}" for f in names) + " | mean | <2 % | 2-10 % | >=10 % |")
    print("|---" * (len(names) + 5) + "|")
    for view in views:
        mious = [folds[f][view]["miou"] for f in names]
        pooled = by_object_size([tuple(p) for f in names for p in folds[f][view]["object_sizes"]])
        print(f"| {view} | " + " | ".join(f"{m:.1f}" for m in mious) + f" | {np.mean(mious):.1f} | "
              + " | ".join(f"{v['fg_iou']:.1f} ({v['episodes']})" for v in pooled.values()) + " |")


if __name__ == "__main__":
    main()
