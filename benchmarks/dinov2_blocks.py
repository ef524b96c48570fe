"""Which DINOv2 block's patch features to match? Fold 0 of the real corpora, 1-shot, from every block at once.

Every episode image is encoded once with blocks 4-11 and the final (layer-normed) output exposed,
tiled (448 px, stride 112) and as the global 224 view. Each candidate feature set is scored as a
training-free prototype model alone and fused with the default's MobileNetV2 (weights 0.5, 0.75),
on the same episodes as `dinov2_real.py --tune` (fold 0 only: its classes are not reported as
held-out evidence for the choice).

Run: python benchmarks/dinov2_blocks.py --root ../shared/data/ccp --root ../shared/data/coco128 \
    --root ../shared/data/camvid --episodes 150
Grid size vs accuracy for the chosen block: add --blocks 9 --resolution 224 (one tile), or 672 --tile-stride 224;
--tile-stride 0 encodes the whole canvas in one pass instead of tiles.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from dinov2_real import episode_images
from real_folds import breakdown
from sgone.backbones import find_weights
from sgone.backbones.dinov2 import FINAL_OUTPUT, DinoV2S14, block_output
from sgone.data.mix import MixSource
from sgone.data.sampler import TestEpisodes
from sgone.engine.cached_episodes import LabelMaps, binary_from_labels
from sgone.engine.episode_eval import _foreground
from sgone.engine.feature_cache import FeatureCache
from sgone.engine.metrics import IoUAccumulator
from sgone.io import read_image
from sgone.models.fused import fuse_logits
from sgone.models.prototype import PrototypeModel
from sgone.models.registry import TRAINING_FREE_MODEL, load_model
from sgone.ops import keep_foreground
from sgone.inputs import image_tensor, input_size

BLOCKS = (4, 5, 6, 7, 8, 9, 10, 11)
NAMES = [f"block {b}" for b in BLOCKS] + ["final"]
CANDIDATES = ([(n,) for n in NAMES] + [(f"block {b}", f"global block {b}") for b in (7, 8, 9)]
              + [("block 6", "block 9"), ("block 7", "block 10"), ("block 8", "block 10"), ("block 8", "block 11")])
WEIGHTS = (1.0, 0.5, 0.75)


def guide(maps: dict[str, torch.Tensor], names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    chosen = [torch.nn.functional.normalize(maps[n].float()[None], dim=1) for n in names]
    return {"guide": torch.cat(chosen, dim=1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", required=True)
    parser.add_argument("--episodes", type=int, default=150)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--feature-cache", default="auto")
    parser.add_argument("--resolution", type=int, default=448, help="longer side of the tiled canvas")
    parser.add_argument("--tile-stride", type=int, default=112, help="0: the whole canvas in one pass")
    parser.add_argument("--blocks", default=None, help="comma-separated blocks to score alone (default: the full grid)")
    args = parser.parse_args()
    candidates = CANDIDATES if args.blocks is None else [(f"block {b}",) for b in args.blocks.split(",")]
    torch.set_grad_enabled(False)
    from sgone.engine.training_data import feature_cache_folder

    source = MixSource(args.root)
    labels = LabelMaps(source, args.size)
    specs = TestEpisodes(source, 0, shots=1, episodes=args.episodes, seed=0).specs
    test = source.classes(0, "test")
    dino = DinoV2S14(resolution=args.resolution, tile_stride=args.tile_stride)
    dino.outputs = tuple(block_output(b) for b in BLOCKS) + (FINAL_OUTPUT,)
    dino.load_file(find_weights("dinov2_s14"))
    maps: dict[str, dict[str, torch.Tensor]] = {}
    for path in tqdm(episode_images(source, specs), desc="encoding every block", dynamic_ncols=True):
        image = read_image(path)
        x = dino.normalize(image_tensor(image, input_size(*image.shape[:2], args.size)))
        # --tile-stride 0: the whole canvas in one pass (no global view)
        tiled, global_view = dino.tiled_maps(x) if args.tile_stride else (dino.whole_maps(x), [])
        maps[path] = {**{n: t[0].half() for n, t in zip(NAMES, tiled)},
                      **{f"global {n}": g[0].half() for n, g in zip(NAMES, global_view)}}
    default = load_model(TRAINING_FREE_MODEL)
    cnn_cache = FeatureCache(feature_cache_folder(args.feature_cache), default.backbone, args.size)
    proto = PrototypeModel(dino)  # scoring only; its backbone is not called
    accs = {(c, w): IoUAccumulator() for c in candidates for w in WEIGHTS}
    base = IoUAccumulator()
    for spec in tqdm(specs, desc="scoring", dynamic_ncols=True):
        own = source.own_id(spec["class_ids"][0])[1]
        (key,) = spec["supports"][0]
        support, query = str(source.image_path(key)), str(source.image_path(spec["query"]))
        mask = torch.from_numpy(binary_from_labels(labels.resized(key), own).astype(np.int64))[None]
        label = torch.from_numpy(binary_from_labels(labels.original(spec["query"]), own).astype(np.int64))
        size = tuple(label.shape)
        det_q = default.encode_levels(cnn_cache.tensors(query))
        det = default.segment(det_q, default.support_prototype(default.encode_levels(cnn_cache.tensors(support)), mask))
        base.add(keep_foreground(_foreground(det["logits"], size), "avg", 1)[0].long(), label, spec["class_ids"])
        for names in candidates:
            sem = proto.segment(guide(maps[query], names), proto.support_prototype(guide(maps[support], names), mask))
            for w in WEIGHTS:
                prob = _foreground(fuse_logits(sem["logits"], det["logits"], w), size)
                accs[(names, w)].add(keep_foreground(prob, "avg", 1)[0].long(), label, spec["class_ids"])
    sources = sorted(set(source.class_source[c] for c in test))
    print(f"fold 0, {len(specs)} 1-shot episodes, DINOv2 canvas {args.resolution} px, tile stride {args.tile_stride}; "
          f"the default: mIoU {100 * base.miou(test):.1f}")
    print("| DINOv2 features | weight | mIoU | " + " | ".join(sources) + " |\n|---|---|---|" + "---|" * len(sources))
    for (names, w), acc in accs.items():
        by = breakdown(acc, source, test)
        print(f"| {' + '.join(names)} | {w:.2f} | {100 * acc.miou(test):.1f} | "
              + " | ".join(f"{by.get(s, float('nan')):.1f}" for s in sources) + " |")


if __name__ == "__main__":
    main()
