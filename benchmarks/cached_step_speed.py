"""Seconds per training step with the frozen backbone's features read from the cache vs computed from images.

Same model (recipe "real": PriorGuidedSGOne, MobileNetV2 frozen, high tap at stride 16; `--backbone
dinov2_s14+mobilenet_v2` adds DINOv2's features), same batch
size and the same query area: the image path loads JPEGs, augments (scale, crop to size x size,
colour) and runs the backbone (no gradient) each step; the cached path reads the features (filled
beforehand) with its query window widened to the whole size x size grid (training crops it to at
most 32 cells a side, which makes a real training step cheaper still). Steps alternate between the two paths
so a changing machine load hits both alike; prints the median of each and their ratio.

Run: python benchmarks/cached_step_speed.py --root ../shared/data/ccp --root ../shared/data/coco128 \
        --root ../shared/data/camvid [--steps 6] [--batch-size 8] [--size 353]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from machine import matmul_gflops
from sgone.data.episode import collate
from sgone.data.mix import MixSource
from sgone.data.sampler import TrainEpisodes
from sgone.data.transforms import TrainTransform
from sgone.engine.cached_episodes import CachedTrainBatches
from sgone.engine.feature_cache import FeatureCache
from sgone.engine.optimisation import freeze_backbone, segmentation_loss, set_train_mode
from sgone.engine.training_data import feature_cache_folder
from sgone.models.registry import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=353)
    parser.add_argument("--feature-cache", default="auto")
    parser.add_argument("--backbone", default="mobilenet_v2", help="mobilenet_v2 or dinov2_s14+mobilenet_v2")
    args = parser.parse_args()
    print(f"machine: 2048^3 matmul {matmul_gflops():.0f} GFLOP/s, {torch.get_num_threads()} threads")
    source = MixSource(args.root)
    model = build_model("sgone-prior", args.backbone, backbone_options={"high_stride": 16})
    freeze_backbone(model, "all")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    cache = FeatureCache(feature_cache_folder(args.feature_cache), model.backbone, args.size)
    batches = CachedTrainBatches(source, 0, cache, batch_size=args.batch_size, max_cells=-(-args.size // 8))
    episodes = TrainEpisodes(source, 0, seed=0, transform=TrainTransform(args.size))
    cache.fill([source.image_path(k) for k in {k for s in range(1, args.steps + 2)
                                               for k in _keys(batches, s)}], progress=False)

    def cached_step(step: int) -> None:
        b = batches.batch(step)
        out = model(b["support_levels"], b["support_masks"], b["query_levels"], from_levels=True)
        _update(optimizer, segmentation_loss(out["logits"], b["query_mask"]))

    def image_step(step: int) -> None:
        first = (step - 1) * args.batch_size
        b = collate([episodes[i] for i in range(first, first + args.batch_size)])
        out = model(b["support_images"][:, 0], b["support_masks"][:, 0], b["query_image"])
        _update(optimizer, segmentation_loss(out["logits"], b["query_mask"]))

    set_train_mode(model, "all")
    cached_step(1), image_step(1)  # warm-up (label maps, allocator)
    times: dict[str, list[float]] = {"cached": [], "images": []}
    for step in range(2, args.steps + 2):
        for name, run in (("cached", cached_step), ("images", image_step)):
            tick = time.perf_counter()
            run(step)
            times[name].append(time.perf_counter() - tick)
    cached, images = statistics.median(times["cached"]), statistics.median(times["images"])
    print(f"batch {args.batch_size} at {args.size} px, median of {args.steps} steps each:")
    print(f"  from images: {images:.2f} s/step   from the feature cache: {cached:.2f} s/step   "
          f"ratio {images / cached:.1f}x")


def _keys(batches: CachedTrainBatches, step: int) -> list[str]:
    first = (step - 1) * batches.batch_size
    specs = [batches.episodes.spec(i) for i in range(first, first + batches.batch_size)]
    return [k for s in specs for k in [s["query"], *s["supports"][0]]]


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


if __name__ == "__main__":
    main()
