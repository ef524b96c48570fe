"""Trained SG-One (PriorGuidedSGOne) vs the training-free default on the UNSEEN classes of the real corpora.

Per fold: HSNet-style test episodes of the fold's test classes (--seed, default 0), 1-shot and 5-shot, both models
on the same cached features (the checkpoints' frozen backbone: ImageNet MobileNetV2, high tap at
stride 16, or DINOv2 + it; longer side `--size`), scored at the original label size, 255 excluded. Prints per-fold mIoU / FB-IoU, the
per-source breakdown and the guidance check (mean learnt similarity inside vs outside the query's
object); writes results.json and, per fold, the 4 best and 4 worst 1-shot episodes of the trained model.

--precision fp32|bf16 runs the checkpoints' DINOv2 under OpenVINO at that precision (the openvino runtime's
DINOv2; MobileNetV2 and the head stay PyTorch fp32 here, `real_photo_check.py --runtimes openvino-bf16`
scores the whole OpenVINO path); the feature cache keeps such features apart. Default auto: as shipped.

Run (after scripts/train_real.sh):
    python benchmarks/real_folds.py --root ../shared/data/ccp --root ../shared/data/coco128 \
        --root ../shared/data/camvid --runs runs/real --episodes 1000 --out runs/real/eval
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sgone.commands.train import json_object
from sgone.data.mix import MixSource
from sgone.data.sampler import TestEpisodes
from sgone.engine.cached_episodes import LabelMaps, predict_cached
from sgone.engine.feature_cache import FeatureCache
from sgone.engine.metrics import SIZE_BINS, IoUAccumulator, by_object_size, object_share
from sgone.io import atomic_write
from sgone.models.registry import build_model, load_model, read_checkpoint


class LastLevels:
    """A feature cache read as its last three levels: MobileNetV2's, out of a DINOv2 + MobileNetV2 cache."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def tensors(self, path, device="cpu"):
        return self.cache.tensors(path, device, select=slice(-3, None))


def dinov2_precision(model, precision: str):
    """The model with its DINOv2 run as the openvino runtime runs it at `precision` (auto: unchanged);
    the backbone's options name the executor, so the feature cache keeps these features apart."""
    if precision == "auto":
        return model
    from sgone.runtimes.openvino_runtime import semantic_encoder

    joint = model.backbone
    joint.semantic = semantic_encoder(joint.semantic, precision, None)
    joint.options["semantic"] = {**joint.options["semantic"], "executor": f"openvino-{precision}"}
    return model


def score(model, source, specs, cache, labels, progress: str):
    """One pass over the episodes for the trained model and the training-free one (its prior, which the
    trained model computes from the same prototypes; checked against PrototypeModel on the first episodes).
    A model with a semantic (DINOv2) level has a fused prior; the default then gets its own column,
    "training-free default", computed from the cache's MobileNetV2 levels.

    Returns {"trained": (acc, ious, guidance, sizes), "training-free": (acc, ious, [], sizes)[, "training-free
    default": ...]}; guidance holds the (mean learnt similarity inside, outside) of each episode's query object,
    sizes the (object share of the query, foreground IoU) of each episode."""
    from tqdm import tqdm

    free = build_model("prototype", "mobilenet_v2", weights=None, backbone_options={"high_stride": 16}).eval()
    joint = getattr(model, "semantic", False)
    names = ("trained", "training-free") + (("training-free default",) if joint else ())
    results = {name: (IoUAccumulator(), [], [], []) for name in names}
    for i, spec in enumerate(tqdm(specs, desc=progress, leave=False, dynamic_ncols=True)):
        out = predict_cached(model, source, spec, cache, labels, with_prior=True)
        rows = [("trained", out["pred"], out["similarity"]), ("training-free", out["prior_pred"], None)]
        if joint:
            rows.append(("training-free default", predict_cached(free, source, spec, LastLevels(cache), labels)["pred"], None))
        elif i < 3 and not torch.equal(predict_cached(free, source, spec, cache, labels)["pred"], out["prior_pred"]):
            sys.exit(f"episode {i}: the trained model's prior differs from the training-free model")
        share = object_share(out["label"])
        for name, pred, sim in rows:
            acc, ious, guidance, sizes = results[name]
            ious.append(acc.add(pred, out["label"], spec["class_ids"]))
            sizes.append((share, ious[-1]))
            if sim is None:
                continue
            sim = torch.nn.functional.interpolate(sim[None], size=out["label"].shape, mode="bilinear",
                                                  align_corners=False)[0, 0]
            inside, outside = out["label"] == 1, out["label"] == 0
            if inside.any() and outside.any():
                guidance.append((float(sim[inside].mean()), float(sim[outside].mean())))
    return results


def breakdown(acc: IoUAccumulator, source: MixSource, classes: list[int]) -> dict[str, float]:
    by_source: dict[str, list[int]] = {}
    for c in classes:
        by_source.setdefault(source.class_source[c], []).append(c)
    return {name: 100 * acc.miou(ids) for name, ids in sorted(by_source.items())}


def save_extremes(model, source, specs, ious, cache, labels, path: Path, count: int = 4) -> None:
    """Best and worst episodes: support + mask, query + truth, prediction, learnt similarity."""
    from sgone import viz
    from sgone.io import read_image

    order = sorted(range(len(ious)), key=lambda i: (-ious[i], i))
    chosen = order[:count] + [i for i in order[::-1][:count] if i not in order[:count]]
    rows, texts = [], []
    for i in chosen:
        spec = specs[i]
        out = predict_cached(model, source, spec, cache, labels)
        own = source.own_id(spec["class_ids"][0])[1]
        support_key = spec["supports"][0][0]
        support = read_image(source.image_path(support_key))
        query = read_image(source.image_path(spec["query"]))
        support_mask = (labels.original(support_key) == own).astype(np.uint8)
        truth = out["label"].numpy().astype(np.uint8)
        pred = out["pred"].numpy().astype(np.uint8)
        rows.append([viz.overlay(support, support_mask, color=(0, 200, 0)), viz.overlay(query, truth, color=(0, 200, 0)),
                     viz.overlay(query, pred, color=(230, 25, 75)),
                     viz.heatmap(out["similarity"][0].numpy(), image=query, value_range=(-1, 1))])
        name = source.class_names[spec["class_ids"][0]]
        texts.append([f"{name}: support", "query, truth", f"prediction IoU {100 * ious[i]:.1f}", "learnt similarity"])
    viz.save_png(path, viz.tile_grid(rows, texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", required=True)
    parser.add_argument("--runs", required=True, help="folder with fold<F>/last.pt of scripts/train_real.sh")
    parser.add_argument("--checkpoint", default="last.pt")
    parser.add_argument("--folds", default="0,1,2,3")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="of the episode lists (0: the documented figures)")
    parser.add_argument("--size", type=int, default=353)
    parser.add_argument("--feature-cache", default="auto")
    parser.add_argument("--out", default=None, help="results.json and pictures (default <runs>/eval)")
    parser.add_argument("--head-weight", type=float, default=None,
                        help="the trained models' head_weight at inference (default: each checkpoint's own)")
    parser.add_argument("--backbone-options", type=json_object, default=None,
                        help='JSON updating the checkpoints\' backbone options, e.g. \'{"resolution": 224, '
                             '"tile_stride": 224}\' (DINOv2 as one 224 tile)')
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="DINOv2 under OpenVINO at fp32 or bf16 (default auto: as the checkpoint ships it)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from sgone.engine.training_data import feature_cache_folder

    source = MixSource(args.root)
    first = Path(args.runs) / f"fold{args.folds.split(',')[0]}" / args.checkpoint
    # the frozen backbone the checkpoints were trained on (ImageNet MobileNetV2, or DINOv2 + it)
    cache = FeatureCache(feature_cache_folder(args.feature_cache),
                         dinov2_precision(load_model(first, backbone_options=args.backbone_options),
                                          args.precision).backbone.eval(), args.size)
    labels = LabelMaps(source, args.size)
    out = Path(args.out or Path(args.runs) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    results = {"size": args.size, "episodes": args.episodes, "seed": args.seed,
               "backbone_options": args.backbone_options, "folds": {}}
    for fold in [int(f) for f in args.folds.split(",")]:
        path = Path(args.runs) / f"fold{fold}" / args.checkpoint
        trained_with = read_checkpoint(path).get("config", {})
        if trained_with.get("fold") != fold or trained_with.get("source_options", {}).get("folds", 4) != 4 \
                or set(trained_with.get("source_options", {})) - {"folds", "cache_dir"}:
            sys.exit(f"{path}: trained on fold {trained_with.get('fold')} with data options "
                     f"{trained_with.get('source_options')}; this script scores the default 4 folds")
        trained = dinov2_precision(load_model(path, backbone_options=args.backbone_options), args.precision).eval()
        if args.head_weight is not None:
            trained.head_weight = args.head_weight
        if FeatureCache(cache.dir.parent, trained.backbone, args.size).tag != cache.tag:
            sys.exit(f"fold {fold}: the checkpoint's backbone differs from fold {args.folds.split(',')[0]}'s; "
                     "cached features do not apply")
        test = source.classes(fold, "test")
        row = {"classes": [source.class_names[c] for c in test]}
        for shots in [int(k) for k in args.shots.split(",")]:
            specs = TestEpisodes(source, fold, shots=shots, episodes=args.episodes, seed=args.seed).specs
            tick = time.perf_counter()
            scored = score(trained, source, specs, cache, labels, f"fold {fold} {shots}-shot")
            ms = 1000 * (time.perf_counter() - tick) / len(specs)
            for name, (acc, ious, guidance, sizes) in scored.items():
                r = row[f"{name} {shots}-shot"] = {
                    "miou": 100 * acc.miou(test), "fb_iou": 100 * acc.fb_iou(),
                    "by_source": breakdown(acc, source, test), "object_sizes": sizes,
                    "per_class": {source.class_names[c]: 100 * v for c, v in acc.class_iou().items()},
                    "classes_scored": len(acc.class_iou())}
                if guidance:
                    r["similarity_inside"] = float(np.mean([g[0] for g in guidance]))
                    r["similarity_outside"] = float(np.mean([g[1] for g in guidance]))
                print(f"fold {fold} {shots}-shot {name:>13}: mIoU {r['miou']:.1f}  FB-IoU {r['fb_iou']:.1f}  "
                      f"by source {', '.join(f'{k} {v:.1f}' for k, v in r['by_source'].items())}"
                      + (f"  learnt similarity in {r['similarity_inside']:.3f} out {r['similarity_outside']:.3f}"
                         if guidance else ""), flush=True)
                if name == "trained" and shots == 1:
                    save_extremes(trained, source, specs, ious, cache, labels, out / f"fold{fold}_best_worst.png")
            print(f"  ({ms:.0f} ms per episode for both models)", flush=True)
        results["folds"][fold] = row
        atomic_write(out / "results.json", json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(results: dict) -> None:
    folds = sorted(results["folds"])
    keys = [k for k in results["folds"][folds[0]] if k != "classes"]
    print("\n| model | " + " | ".join(f"fold {f}" for f in folds) + " | mean | FB-IoU mean |")
    print("|---" * (len(folds) + 3) + "|")
    for key in keys:
        vals = [results["folds"][f][key]["miou"] for f in folds]
        fb = [results["folds"][f][key]["fb_iou"] for f in folds]
        print(f"| {key} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {np.mean(vals):.1f} | {np.mean(fb):.1f} |")
    print("\nMean foreground IoU by the object's share of the query's labelled pixels (episodes of these folds pooled):")
    print("| model | " + " | ".join(name for _, _, name in SIZE_BINS) + " |\n" + "|---" * (len(SIZE_BINS) + 1) + "|")
    for key in keys:
        pooled = by_object_size([tuple(pair) for f in folds for pair in results["folds"][f][key]["object_sizes"]])
        print(f"| {key} | " + " | ".join(f"{v['fg_iou']:.1f} ({v['episodes']})" for v in pooled.values()) + " |")


if __name__ == "__main__":
    main()
