"""Does the guidance map discriminate? Mean support-query cosine similarity inside vs outside
the query's object, on test episodes of unseen classes, for each model given; and the 1-shot vs
5-shot mIoU of those episodes (a model that ignores its guidance scores the same with 5 shots).

Run: python benchmarks/guidance_check.py runs/synthetic-fold0/best.pt prototype-mobilenet_v2 [--fold 0] [--episodes 20]
     python benchmarks/guidance_check.py runs/real/fold0/last.pt prototype-mobilenet_v2 \
         --root ../shared/data/ccp --root ../shared/data/coco128 --root ../shared/data/camvid --size 353
(with --root: the mixed real corpora, fold F's unseen classes; without: the synthetic benchmark)
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from sgone.data.sampler import TestEpisodes
from sgone.data.synthetic import SyntheticSource
from sgone.engine.metrics import IoUAccumulator
from sgone.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--root", action="append", default=None, help="real corpora (voclike), as --dataset mix")
    parser.add_argument("--size", type=int, default=None, help="Predictor input size (default: original size)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.root:
        from sgone.data.mix import MixSource

        source = MixSource(args.root)
    else:
        source = SyntheticSource(seed=0)
    episodes = TestEpisodes(source, args.fold, shots=5, episodes=args.episodes, seed=0)
    print("| model | similarity in object | outside | in - out | 1-shot mIoU | 5-shot mIoU |\n|---|---|---|---|---|---|")
    for name in args.models:
        predictor = Predictor(name, size=args.size)
        inside, outside = [], []
        scores = {1: IoUAccumulator(), 5: IoUAccumulator()}
        for i in range(len(episodes)):
            ep = episodes[i]
            for k in (1, 5):
                predictor.set_support(ep.support_images[0][:k], ep.support_masks[0][:k])
                result = predictor.predict(ep.query_image)
                scores[k].add(result.mask, ep.query_mask, ep.class_ids)
                if k == 1:
                    inside.append(result.similarity[ep.query_mask == 1].mean())
                    outside.append(result.similarity[ep.query_mask == 0].mean())
        print(f"| {name} | {np.mean(inside):.3f} | {np.mean(outside):.3f} | {np.mean(inside) - np.mean(outside):.3f} "
              f"| {100 * scores[1].miou():.1f} | {100 * scores[5].miou():.1f} |", flush=True)


if __name__ == "__main__":
    main()
