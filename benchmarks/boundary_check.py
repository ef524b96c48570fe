"""Does an edge-aware boundary step help still images? Guided filter on the upsampled probability.

The default model's 1-shot episodes of the real corpora's unseen classes (cached MobileNetV2 features
at longer side --size, HSNet-style lists, seed 0): the probability upsampled bilinearly to the label's
size (what `Predictor` does), then, for each setting, refined by `sgone.boundary.refine_probability`
(a guided filter steered by the query's grey levels, radius = `radius` x the feature stride in output
pixels) and thresholded at 0.5. mIoU per setting, the unrefined row first. Choose on fold 0; report the
chosen setting on folds 1-3:

    python benchmarks/boundary_check.py --root ../shared/data/ccp --root ../shared/data/coco128 \
        --root ../shared/data/camvid --folds 0 --episodes 300
    python benchmarks/boundary_check.py ... --folds 1,2,3 --episodes 300 --settings 2:0.01
    python benchmarks/boundary_check.py --sample     # the bundled photo through Predictor at several --size
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from real_folds import breakdown
from sgone.data.mix import MixSource
from sgone.data.sampler import TestEpisodes
from sgone.engine.cached_episodes import LabelMaps, predict_cached
from sgone.engine.feature_cache import FeatureCache
from sgone.engine.metrics import IoUAccumulator
from sgone.io import read_image
from sgone.models.registry import TRAINING_FREE_MODEL, load_model
from sgone.boundary import refine_probability

GRID = "0.5:0.001,0.5:0.01,1:0.001,1:0.01,1:0.1,2:0.01,2:0.1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append")
    parser.add_argument("--sample", action="store_true",
                        help="instead: IoU on the bundled sample photo through Predictor, boundary none vs guided, "
                             "at input sizes 473, 320, 224 and 160")
    parser.add_argument("--folds", default="0")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--feature-cache", default="auto")
    parser.add_argument("--settings", default=GRID, help="comma list of radius:eps (radius in feature strides)")
    parser.add_argument("--filter", choices=("probability", "mask"), default="probability",
                        help="what the guided filter smooths: the probability (the Predictor's step) or the "
                             "thresholded mask (an alternative, not in the Predictor)")
    args = parser.parse_args()
    if args.sample:
        return sample_sizes()
    if not args.root:
        parser.error("--root is required (or --sample)")
    torch.set_grad_enabled(False)
    from sgone.engine.training_data import feature_cache_folder

    source = MixSource(args.root)
    labels = LabelMaps(source, args.size)
    model = load_model(TRAINING_FREE_MODEL)
    cache = FeatureCache(feature_cache_folder(args.feature_cache), model.backbone, args.size)
    settings = [tuple(float(v) for v in s.split(":")) for s in args.settings.split(",")]
    names = ["bilinear (today)"] + [f"guided, radius {r:g} strides, eps {e:g}" for r, e in settings]
    means = {n: [] for n in names}
    for fold in [int(f) for f in args.folds.split(",")]:
        test = source.classes(fold, "test")
        specs = TestEpisodes(source, fold, shots=1, episodes=args.episodes, seed=0).specs
        accs = {n: IoUAccumulator() for n in names}
        for spec in tqdm(specs, desc=f"fold {fold}", dynamic_ncols=True, leave=False):
            out = predict_cached(model, source, spec, cache, labels)
            prob = out["prob"][0]
            image = read_image(source.image_path(spec["query"]))
            if image.shape[:2] != tuple(prob.shape):
                continue  # a label map of another size than its image (none in the shared corpora)
            accs[names[0]].add((prob > 0.5).long(), out["label"], spec["class_ids"])
            for name, (radius, eps) in zip(names[1:], settings):
                src = prob if args.filter == "probability" else (prob > 0.5).float()
                refined = refine_probability(src[None], image, args.size, radius=radius, eps=eps)[0]
                accs[name].add((refined > 0.5).long(), out["label"], spec["class_ids"])
        for name, acc in accs.items():
            means[name].append(100 * acc.miou(test))
            by = breakdown(acc, source, test)
            print(f"fold {fold} | {name} | {100 * acc.miou(test):.1f} | "
                  + ", ".join(f"{k} {v:.1f}" for k, v in by.items()), flush=True)
    print("\n| setting | " + " | ".join(f"fold {f}" for f in args.folds.split(",")) + " | mean |\n|---|"
          + "---|" * (len(means[names[0]]) + 1))
    for name, vals in means.items():
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {np.mean(vals):.1f} |")


def sample_sizes() -> None:
    from sgone.samples import sample_paths
    from sgone.io import read_mask
    from sgone.predictor import Predictor

    paths = sample_paths()
    support, mask, query = read_image(paths["support"]), read_mask(paths["support_mask"]), read_image(paths["query"])
    truth = read_mask(paths["query_mask"]) == 1
    print("| input size | boundary none | boundary guided |\n|---|---|---|")
    for size in (473, 320, 224, 160):
        ious = []
        for boundary in ("none", "guided"):
            predictor = Predictor(TRAINING_FREE_MODEL, size=size, boundary=boundary)
            predictor.set_support(support, mask)
            pred = predictor.predict(query).mask == 1
            ious.append((pred & truth).sum() / (pred | truth).sum())
        print(f"| {size} | {ious[0]:.3f} | {ious[1]:.3f} |")


if __name__ == "__main__":
    main()
