"""`sgone train`: episodic training of SG-One on one fold; resumable; multi-GPU under torchrun.

    sgone train --dataset pascal --root /data/VOC2012 --fold 0 --out runs/pascal-f0
    torchrun --nproc_per_node 4 -m sgone.cli train --dataset pascal --root ... --device cuda
"""
from __future__ import annotations

import argparse

from sgone.commands.data import add_source_arguments
from sgone.errors import SgoneError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train SG-One on one fold of a data set",
        description="Episodic training on the fold's seen classes. Checkpoints (last.pt, best.pt by "
                    "validation mIoU on the seen classes' val images), log.jsonl and training_curve.png go "
                    "to --out. Under torchrun every process trains on its own episodes (DDP).")
    p.add_argument("--dataset", default="synthetic", help="pascal, coco, fss, folder, voclike or synthetic (default)")
    p.add_argument("--root", default=None, action="append", metavar="PATH",
                   help="the data set's folder (not needed for synthetic; repeat it for --dataset mix)")
    p.add_argument("--fold", type=int, default=0, help="fold whose classes are held out (default 0)")
    p.add_argument("--backbone", default="mobilenet_v2",
                   help="mobilenet_v2 (default), efficientnet_lite0, vgg16, resnet50, or dinov2_s14+mobilenet_v2 "
                        "(DINOv2 features beside MobileNetV2's, for --recipe real)")
    p.add_argument("--weights", default="auto", metavar="PATH",
                   help="backbone ImageNet weights: auto (find them offline, default), none, or a file")
    p.add_argument("--backbone-options", type=json_object, default=None, metavar="JSON",
                   help='options of the backbone builder, updating the recipe\'s, e.g. \'{"resolution": 336, '
                        '"tile_stride": 0}\' (DINOv2 on the 336-px image in one pass); stored in the checkpoint')
    p.add_argument("--variant", choices=("fixed", "published"), default="fixed",
                   help="fixed (default) or published: the public code's behaviour, 255 trained as object")
    p.add_argument("--shots", type=int, default=1, help="support images per episode (default 1)")
    p.add_argument("--balance", choices=("pairs", "source"), default="pairs",
                   help="training episodes: pairs = every (image, class) pair alike (default); source = each "
                        "corpus of a --dataset mix alike, then its pairs")
    p.add_argument("--recipe", choices=("modern", "published", "real"), default="modern",
                   help="modern (default: AdamW, frozen backbone, batch 8, cosine), published (SGD 1e-5, batch 1) "
                        "or real (SG-One with the training-free prior on cached features: the real-photo recipe)")
    p.add_argument("--steps", type=int, default=20000, help="optimiser steps (default 20000)")
    p.add_argument("--batch-size", type=int, default=None, help="episodes per step and process (recipe default)")
    p.add_argument("--size", type=int, default=None,
                   help="training crops are N x N (recipe default: 321 modern, original size published; 0 = "
                        "original size); validation episodes feed the longer side at N, as `sgone evaluate --size` does")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (recipe default)")
    p.add_argument("--freeze", choices=("all", "bn", "none"), default=None,
                   help="backbone: all = frozen, bn = BatchNorm frozen, none = all trained (recipe default)")
    p.add_argument("--output", "--out", dest="out", default=None, metavar="DIR",
                   help="output folder (default runs/<dataset>-fold<F>)")
    p.add_argument("--overwrite", action="store_true", help="start again in an output folder that holds a run")
    p.add_argument("--feature-cache", default="auto", metavar="DIR",
                   help="with a frozen backbone, cache its features here (auto: the user cache folder; none: off)")
    p.add_argument("--ckpt-minutes", type=float, default=5.0,
                   help="also write last.pt after this many minutes of wall time (default 5; 0 = off)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue from --out/last.pt (or from CKPT) with the same settings")
    p.add_argument("--val-every", type=int, default=1000, help="validate every M steps (default 1000; 0 = never)")
    p.add_argument("--val-episodes", type=int, default=100, help="validation episodes (default 100)")
    p.add_argument("--ckpt-every", type=int, default=1000, help="write last.pt every N steps (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episode stream and the init (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA, off on CPU)")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_source_arguments(p)
    p.set_defaults(func=run)


def json_object(text: str) -> dict:
    """argparse type: a JSON object ("{...}")."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object ({{...}})")
    return value


def config_from_args(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the command line sets."""
    from sgone.commands.data import root_from_args, source_options

    for flag in ("steps", "shots", "val_every", "ckpt_every", "val_episodes"):
        value = getattr(args, flag)
        if value < (1 if flag in ("steps", "shots", "ckpt_every") else 0):
            raise SgoneError(f"--{flag.replace('_', '-')} {value}: too small")
    if args.batch_size is not None and args.batch_size < 1:
        raise SgoneError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.size is not None and args.size < 0:
        raise SgoneError(f"--size {args.size}: must be positive (0 = original size)")
    weights = None if str(args.weights).lower() == "none" else args.weights
    backbone_options = None  # the recipe's
    if getattr(args, "backbone_options", None) is not None:
        from sgone.engine.recipes import RECIPES

        backbone_options = {**RECIPES.get(args.recipe, {}).get("backbone_options", {}), **args.backbone_options}
    return {
        "dataset": args.dataset, "root": root_from_args(args), "fold": args.fold, "backbone": args.backbone,
        "variant": args.variant, "weights": weights, "shots": args.shots, "balance": args.balance, "recipe": args.recipe,
        "steps": args.steps, "batch_size": args.batch_size,
        "size": -1 if args.size is None else (None if args.size == 0 else args.size),
        "lr": args.lr, "freeze": args.freeze, "out": args.out or f"runs/{args.dataset}-fold{args.fold}",
        "resume": args.resume, "overwrite": args.overwrite, "ckpt_minutes": args.ckpt_minutes,
        "feature_cache": None if str(args.feature_cache).lower() == "none" else args.feature_cache,
        "val_every": args.val_every, "val_episodes": args.val_episodes,
        "ckpt_every": args.ckpt_every, "seed": args.seed, "device": args.device, "amp": args.amp,
        "workers": args.workers, "progress": not args.quiet, "source_options": source_options(args),
        "backbone_options": backbone_options,
    }


def run(args: argparse.Namespace) -> int:
    from sgone.engine import distributed
    from sgone.engine.trainer import train

    config = config_from_args(args)
    try:
        result = train(config)
    finally:
        distributed.cleanup()
    if result["rank"] == 0 and not result["losses"]:
        print(f"already trained to step {result['step']}: nothing to do ({result['out']}/last.pt)")
    elif result["rank"] == 0:
        last = result["losses"][-1][1]
        best = result["best_metric"]
        print(f"trained to step {result['step']}: last loss {last:.4f}"
              + (f", best validation mIoU {best:.1f} ({result['validation']})" if best is not None else ""))
        print(f"wrote {result['out']}/last.pt" + (", best.pt" if best is not None else "")
              + ", log.jsonl, training_curve.png")
    return 0
