"""Does the guidance map discriminate? Mean support-query cosine similarity inside vs outside
the query's object, on synthetic test episodes, for each model given.

Run: python benchmarks/guidance_check.py runs/synthetic-fold0/best.pt prototype-mobilenet_v2 [--fold 0] [--episodes 20]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from sgone.data.sampler import TestEpisodes
from sgone.data.synthetic import SyntheticSource
from sgone.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    episodes = TestEpisodes(SyntheticSource(seed=0), args.fold, shots=1, episodes=args.episodes, seed=0)
    print("| model | similarity in object | outside | max - min |\n|---|---|---|---|")
    for name in args.models:
        predictor = Predictor(name, size=None)
        inside, outside, spread = [], [], []
        for i in range(len(episodes)):
            ep = episodes[i]
            predictor.set_support([ep.support_images[0][0]], [ep.support_masks[0][0]])
            sim = predictor.predict(ep.query_image).similarity
            inside.append(sim[ep.query_mask == 1].mean())
            outside.append(sim[ep.query_mask == 0].mean())
            spread.append(sim.max() - sim.min())
        print(f"| {name} | {np.mean(inside):.3f} | {np.mean(outside):.3f} | {np.mean(spread):.3f} |", flush=True)


if __name__ == "__main__":
    main()
