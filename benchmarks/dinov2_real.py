"""DINOv2 ViT-S/14 (ONNX, tiled) vs the default on the UNSEEN classes of the real corpora, from cached features.

The registered models (the default, prototype-dinov2_s14, prototype-dinov2_s14-mobilenet_v2) on the
given folds, 1-shot and 5-shot, HSNet-style episodes with seed 0, mIoU per fold and per source, all on
the same episodes; writes results.json to --out. Folds 1-3 by default: fold 0 chose the DINOv2 block
and the fusion weight (`dinov2_blocks.py`), so it is not held-out evidence.
Features are cached per backbone (`FeatureCache`, longer side --size): the first run encodes every
image the episodes touch (DINOv2 ~0.5 s an image on 2 cores), later runs read them.

Run:
    python benchmarks/dinov2_real.py --root ../shared/data/ccp --root ../shared/data/coco128 \
        --root ../shared/data/camvid --folds 1,2,3 --episodes 1000 --out runs/dinov2
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from real_folds import breakdown
from sgone.data.mix import MixSource
from sgone.data.sampler import TestEpisodes
from sgone.engine.cached_episodes import LabelMaps, predict_cached
from sgone.engine.feature_cache import FeatureCache, JointFeatureCache
from sgone.engine.metrics import IoUAccumulator, by_object_size, object_share
from sgone.io import atomic_write
from sgone.models.fused import FusedPrototypeModel
from sgone.models.registry import TRAINING_FREE_MODEL, load_model

MODELS = (TRAINING_FREE_MODEL, "prototype-dinov2_s14", "prototype-dinov2_s14-mobilenet_v2",
          "prototype-dinov2_s14-mobilenet_v2-224", "prototype-dinov2_s14-mobilenet_v2-whole")


def parts(model):
    """(DINOv2 backbone, MobileNetV2 backbone) of a registered model; either may be None."""
    if isinstance(model, FusedPrototypeModel):
        return model.semantic.backbone, model.detail.backbone
    return (model.backbone, None) if model.backbone.name == "dinov2_s14" else (None, model.backbone)


def cache_key(backbone) -> str:
    return json.dumps([backbone.name, backbone.options], sort_keys=True)


def cache_for(model, caches: dict):
    dino, cnn = parts(model)
    chosen = [caches[cache_key(b)] for b in (dino, cnn) if b is not None]
    return chosen[0] if len(chosen) == 1 else JointFeatureCache(chosen)


def episode_images(source, specs) -> list[str]:
    keys = {spec["query"] for spec in specs} | {k for spec in specs for way in spec["supports"] for k in way}
    return sorted({str(source.image_path(k)) for k in keys})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", required=True)
    parser.add_argument("--folds", default="1,2,3")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--feature-cache", default="auto")
    parser.add_argument("--fill-only", action="store_true", help="encode the episodes' images into the caches, then stop")
    parser.add_argument("--out", default="runs/dinov2")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated registered names")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from sgone.engine.training_data import feature_cache_folder

    source = MixSource(args.root)
    labels = LabelMaps(source, args.size)
    models = {name: load_model(name) for name in args.models.split(",")}
    caches = {}
    for model in models.values():
        for backbone in parts(model):
            if backbone is not None and cache_key(backbone) not in caches:
                caches[cache_key(backbone)] = FeatureCache(feature_cache_folder(args.feature_cache), backbone, args.size)
    folds = [int(f) for f in args.folds.split(",")]
    shots_list = [int(k) for k in args.shots.split(",")]
    results = {"size": args.size, "episodes": args.episodes, "seed": 0, "folds": {}}
    all_sizes: dict[str, list[tuple[float, float]]] = {}
    for fold, shots in itertools.product(folds, shots_list):
        test = source.classes(fold, "test")
        specs = TestEpisodes(source, fold, shots=shots, episodes=args.episodes, seed=0).specs
        problems = JointFeatureCache(list(caches.values())).fill(episode_images(source, specs))
        if problems:
            raise SystemExit("\n".join(problems))
        if args.fill_only:
            continue
        row = results["folds"].setdefault(str(fold), {"classes": [source.class_names[c] for c in test]})
        for name, model in models.items():
            acc = IoUAccumulator()
            cache = cache_for(model, caches)
            sizes = []
            for spec in specs:
                out = predict_cached(model, source, spec, cache, labels)
                iou = acc.add(out["pred"], out["label"], spec["class_ids"])
                sizes.append((object_share(out["label"]), float(iou)))
            row[f"{name} {shots}-shot"] = {"miou": 100 * acc.miou(test), "fb_iou": 100 * acc.fb_iou(),
                                           "by_source": breakdown(acc, source, test),
                                           "by_object_size": by_object_size(sizes)}
            all_sizes.setdefault(f"{name} {shots}-shot", []).extend(sizes)
            print(f"fold {fold} {shots}-shot {name}: mIoU {100 * acc.miou(test):.1f} "
                  + " ".join(f"{k} {v:.1f}" for k, v in row[f'{name} {shots}-shot']['by_source'].items()), flush=True)
    if args.fill_only:
        return
    for shots in shots_list:
        for name in models:
            key = f"{name} {shots}-shot"
            vals = [results["folds"][str(f)][key]["miou"] for f in folds]
            results.setdefault("mean", {})[key] = float(np.mean(vals))
            print(f"mean over folds {folds}, {shots}-shot, {name}: {np.mean(vals):.1f}")
            results.setdefault("by_object_size", {})[key] = pooled = by_object_size(all_sizes[key])
            print("    mean foreground IoU by the object's share of the query: "
                  + ", ".join(f"{size} {v['fg_iou']:.1f} ({v['episodes']} episodes)" for size, v in pooled.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
