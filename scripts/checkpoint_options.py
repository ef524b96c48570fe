"""Write a copy of a checkpoint that runs with other inference options (weights unchanged).

For measuring a trained model under other settings of its frozen backbone or head, e.g. the
default model with DINOv2 as one 224 tile instead of the tiled 448 canvas:

    python scripts/checkpoint_options.py sgone-dinov2_s14-mobilenet_v2-real runs/default-224.pt \
        --backbone-options '{"resolution": 224, "tile_stride": 224}'

SRC: a checkpoint path or a shipped checkpoint's name. --backbone-options update the checkpoint's
own (other keys kept); --head-weight sets PriorGuidedSGOne's head_weight. Written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys

from sgone.commands.train import json_object
from sgone.engine.checkpoint import export_for_inference
from sgone.errors import SgoneError
from sgone.models.registry import build_model_from_config, read_checkpoint, shipped_checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="checkpoint path or shipped checkpoint name")
    parser.add_argument("dst", help="where to write the copy (.pt)")
    parser.add_argument("--backbone-options", type=json_object, default=None, metavar="JSON")
    parser.add_argument("--head-weight", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        src = shipped_checkpoints().get(args.src, args.src)
        config = read_checkpoint(src)["model_config"]
        inference = {}
        if args.backbone_options:
            inference["backbone_options"] = {**config.get("backbone_options", {}), **args.backbone_options}
        if args.head_weight is not None:
            inference["head_weight"] = args.head_weight
        build_model_from_config({**config, **inference}, weights=None)  # must build: fail before writing
        export_for_inference(src, args.dst, inference=inference)
    except (SgoneError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: {args.src} with {json.dumps(inference)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
