"""`sgone evaluate`: mIoU / FB-IoU on a fold's fixed test episodes (or DAVIS-2016 J&F).

    sgone evaluate --checkpoint runs/pascal-f0/best.pt --dataset pascal --root /data/VOC2012 --fold 0
    sgone evaluate --checkpoint 'runs/pascal-f{fold}/best.pt' --dataset pascal --root ... --fold all
    sgone evaluate --model prototype-mobilenet_v2 --dataset synthetic --fold all --shots 5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sgone.commands.flags import add_fusion_argument
from sgone.errors import SgoneError
from sgone.options import DEFAULT_SIZE, TRAINING_FREE_MODEL


def register(subparsers) -> None:
    from sgone.commands.data import add_source_arguments
    from sgone.video.options import DEFAULT_MODE, MODES

    p = subparsers.add_parser(
        "evaluate", help="score a model on a data set's test episodes",
        description="Run a fixed list of test episodes (HSNet style: 1000 per fold, seed 0) and report per-class "
                    "IoU, mIoU and FB-IoU, scored at the original label size with 255 pixels excluded. "
                    "Writes results.json, results.md, results.csv and episodes.png to --out. "
                    "--dataset davis2016 runs one-shot video segmentation and reports J&F.")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", metavar="CKPT",
                       help="a training checkpoint; with --fold all a path holding {fold} gives one per fold")
    model.add_argument("--model", metavar="NAME",
                       help=f"a registered model name (default without --checkpoint: {TRAINING_FREE_MODEL}, "
                            "the training-free model, which was trained on no class a benchmark tests; for davis2016 "
                            "the model `sgone video` runs by default, the same one)")
    p.add_argument("--dataset", default="synthetic", help="pascal, coco, fss, folder, voclike, synthetic (default), davis2016")
    p.add_argument("--root", default=None, action="append", metavar="PATH",
                   help="the data set's folder (not needed for synthetic; repeat it for --dataset mix)")
    p.add_argument("--fold", default="0", help="fold number or 'all' (mean over the folds; default 0)")
    p.add_argument("--shots", type=int, default=1, help="support images per episode (default 1)")
    p.add_argument("--ways", type=int, default=1, help="classes per episode (default 1)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per fold (default 1000; pfenet style 5000)")
    p.add_argument("--seed", type=int, default=None, help="episode seed (default 0; pfenet style 321)")
    p.add_argument("--style", choices=("hsnet", "pfenet"), default="hsnet", help="how episodes are drawn (default hsnet)")
    add_fusion_argument(p, "k-shot fusion: average prototypes (default), max (union) or vote of the k masks")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, default=None, metavar="N",
                      help=f"longer image side fed to the network, aspect kept, as in `sgone segment` "
                           f"(default {DEFAULT_SIZE}, "
                           "davis2016: `sgone video`'s; 0 = each image at its own size); scores stay at the "
                           "original label size")
    size.add_argument("--original-size", dest="size", action="store_const", const=0,
                      help="feed images at their own size (the same as --size 0)")
    p.add_argument("--output", "--out", dest="out", default=None, metavar="DIR",
                   help="output folder (default runs/eval-<dataset>)")
    p.add_argument("--grid", type=int, default=4, metavar="N", help="best and worst N episodes in episodes.png (0 = none)")
    p.add_argument("--mode", choices=(*MODES, "all"), default=None,
                   help=f"davis2016: the video mode (default: `sgone video`'s, {DEFAULT_MODE}; all = each mode in "
                        f"turn, results in OUT/<mode>/); see `sgone video --help`")
    p.add_argument("--split", choices=("train", "val", "trainval"), default="val",
                   help="davis2016: the sequence list to score (default val; ImageSets/2016/<split>.txt or ImageSets/480p/<split>.txt)")
    p.add_argument("--sequences", default=None, metavar="FILE_OR_A,B",
                   help="davis2016: score only these sequences (a comma list, or a file with one name a line, "
                        "'#' comments), e.g. docs/splits/davis2016-tune.txt")
    p.add_argument("--save-masks", action="store_true",
                   help="davis2016: also write the predicted masks to OUT/masks/<sequence>/<frame>.png")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_source_arguments(p)
    p.set_defaults(func=run)


def parse_folds(value: str, folds: int) -> list[int]:
    if value == "all":
        return list(range(folds))
    try:
        fold = int(value)
    except ValueError:
        raise SgoneError(f"--fold {value}: use a fold number or 'all'") from None
    if not 0 <= fold < folds:
        raise SgoneError(f"--fold {fold}: the data set has folds 0..{folds - 1}")
    return [fold]


def model_loader(args: argparse.Namespace, device, dataset: str, folds: list[int], multi: bool):
    """fold -> model in eval mode; checks that a checkpoint was not trained on the classes it is tested on."""
    import torch

    from sgone.models.registry import TRAINING_FREE_MODEL, assemble, load_model, read_checkpoint

    # not the default of `segment`: that one was trained on real photos whose classes overlap the
    # benchmarks' test classes (COCO's person, car, chair...), so it would not score unseen classes
    template = args.checkpoint or args.model or TRAINING_FREE_MODEL
    per_fold = "{fold}" in template
    checkpoints: dict[str, dict] = {}  # each file read once

    def checkpoint(name: str) -> dict:
        if name not in checkpoints:
            checkpoints[name] = read_checkpoint(name)
        return checkpoints[name]

    if multi and not per_fold and args.checkpoint:
        ckpt = checkpoint(template)
        trained = ckpt.get("config", {}).get("fold")
        if trained is not None and ckpt.get("config", {}).get("dataset") == dataset:
            raise SgoneError(f"{template}: trained on fold {trained}, so the other folds' test classes were seen "
                             "in training; pass one checkpoint per fold as a path holding {fold}")

    loaded: dict[str, torch.nn.Module] = {}  # a model shared by several folds is loaded once

    def load(fold: int) -> torch.nn.Module:
        name = template.format(fold=fold) if per_fold else template
        if name not in loaded:
            loaded[name] = read(name, fold)
        return loaded[name]

    def read(name: str, fold: int) -> torch.nn.Module:
        if not args.checkpoint:
            return load_model(name, device)
        ckpt = checkpoint(name)
        config = ckpt.get("config", {})
        if config.get("dataset") == dataset and config.get("fold") not in (None, fold):
            print(f"warning: {name} was trained on fold {config['fold']}: fold {fold}'s test classes were seen "
                  "in training", file=sys.stderr)
        return assemble(name, ckpt["model_config"], ckpt["model"]).to(device).eval()

    return load


def run(args: argparse.Namespace) -> int:
    from sgone.commands.data import root_from_args, source_options
    from sgone.engine import distributed

    if args.shots < 1 or args.ways < 1:
        raise SgoneError("--shots and --ways must be at least 1")
    if args.episodes is not None and args.episodes < 1:
        raise SgoneError(f"--episodes {args.episodes}: must be at least 1")
    if args.size is None:
        from sgone.video.model import DEFAULT_VIDEO_SIZE

        args.size = DEFAULT_VIDEO_SIZE if args.dataset == "davis2016" else DEFAULT_SIZE
    if args.size < 0 or 0 < args.size < 8:
        raise SgoneError(f"--size {args.size}: must be at least 8 (or 0 for the original size)")
    out = Path(args.out or f"runs/eval-{args.dataset}")
    info = distributed.init_distributed(args.device)
    try:
        if args.dataset == "davis2016":
            return run_davis(args, info.device, out)
        from sgone.data.sources import build_source
        from sgone.engine.episode_eval import coverage_warning, evaluate, evaluate_folds

        source = build_source(args.dataset, root_from_args(args), **source_options(args))
        folds = parse_folds(str(args.fold), int(getattr(source, "folds", 1)))
        load = model_loader(args, info.device, args.dataset, folds, multi=len(folds) > 1)
        # every fold's checkpoint is found and loaded before any episode runs
        models = {fold: load(fold) for fold in folds}
        options = dict(shots=args.shots, ways=args.ways, episodes=args.episodes, seed=args.seed, style=args.style,
                       fusion=args.fusion, size=args.size or None, device=info.device, progress=not args.quiet,
                       grid=args.grid)
        if len(folds) == 1:
            results = evaluate(models[folds[0]], source, folds[0], out=out, **options)
        else:
            results = evaluate_folds(models.__getitem__, source, folds, out=out, **options)
    finally:
        distributed.cleanup()
    if info.is_main:
        per_fold = results.get("per_fold", [results])
        for r in per_fold:
            print(f"fold {r['fold']}: mIoU {r['miou']:.1f}  FB-IoU {r['fb_iou']:.1f}  ({r['episodes']} episodes)")
            if r["uncovered_classes"]:
                print(f"warning: {coverage_warning(r)}", file=sys.stderr)
        if len(per_fold) > 1:
            print(f"mean: mIoU {results['miou']:.1f}  FB-IoU {results['fb_iou']:.1f}")
        print(f"wrote {out}/results.json, results.md, results.csv")
    return 0


def run_davis(args: argparse.Namespace, device, out: Path) -> int:
    """DAVIS-2016 one-shot video segmentation, scored by sgone.engine.video_metrics; without --model and
    --mode it runs what `sgone video` runs by default."""
    from sgone.commands.data import root_from_args
    from sgone.data.davis import DavisSource, read_sequence_list
    from sgone.engine.video_metrics import evaluate_davis
    from sgone.video.model import default_threads, video_predictor
    from sgone.video.tracker import DEFAULT_MODE, MODES

    if args.root is None:
        raise SgoneError("davis2016 needs --root (the DAVIS folder)")
    sequences = read_sequence_list(args.sequences) if args.sequences else None
    root = root_from_args(args)
    source = DavisSource(root)
    # a missing split list, sequence folder or annotation fails before the model loads
    source.require(sequences or source.sequences(args.split))
    import torch

    torch.set_num_threads(default_threads())  # as `sgone video` does by default
    predictor = video_predictor(args.checkpoint or args.model, device=device, size=args.size, fusion=args.fusion)
    modes = MODES if args.mode == "all" else [args.mode or DEFAULT_MODE]
    for mode in modes:
        where = out / mode if args.mode == "all" else out
        results = evaluate_davis(predictor, root, where, mode=mode, sequences=sequences, split=args.split,
                                 save_masks=args.save_masks, progress=not args.quiet)
        ov = results["overall"]
        print(f"davis2016 {results['split']} ({len(results['sequences'])} sequences), mode {mode}: "
              f"J&F {100 * ov['J&F']:.1f}  J mean {100 * ov['J']['mean']:.1f} recall {100 * ov['J']['recall']:.1f} "
              f"decay {100 * ov['J']['decay']:.1f}  F mean {100 * ov['F']['mean']:.1f} recall {100 * ov['F']['recall']:.1f} "
              f"decay {100 * ov['F']['decay']:.1f}  ({results['fps']:.2f} frames/s with scoring)")
        print(f"wrote {where}/results.json, results.md")
    return 0
