"""`sgone data`: check a data set, show what it holds per fold and class, and render sample episodes."""
from __future__ import annotations

import argparse
from pathlib import Path

from sgone.errors import SgoneError

FULL_TABLE_MAX = 100  # beyond this many classes print a summary instead of one line per class


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="check a data set and list its classes, images and folds",
        description="Read a data set from --root, print its classes, images per class per split and "
                    "fold, and every problem found (exit code 2 when there are problems). "
                    "With --grid, also draw sample episodes to a PNG.")
    p.add_argument("--dataset", required=True, help="pascal, coco, fss, folder, voclike, synthetic or davis2016")
    p.add_argument("--root", default=None, action="append", metavar="PATH",
                   help="the data set's folder (repeat it for --dataset mix)")
    p.add_argument("--write-splits", default=None, metavar="DIR", help="mix: write the class folds to DIR/fold<F>.txt")
    p.add_argument("--fold", type=int, default=None, help="show only this fold (default: all)")
    p.add_argument("--shots", type=int, default=1, help="check classes have shots + 1 images (default 1)")
    p.add_argument("--ways", type=int, default=1, help="ways of the sample episodes (default 1)")
    p.add_argument("--output", "--grid", dest="grid", default=None, metavar="OUT.png",
                   help="draw sample test episodes to this PNG")
    p.add_argument("--episodes", type=int, default=8, help="sample episodes in the grid (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample episodes (default 0)")
    p.add_argument("--split", choices=("train", "val", "trainval"), default=None,
                   help="davis2016: the sequence list to check (default: every list present)")
    add_source_arguments(p)
    p.set_defaults(func=run)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Data-set flags shared by data, train and evaluate (mapped to constructor options by `source_options`)."""
    g = parser.add_argument_group("data set options")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where to cache class lists when the data folder is read-only")
    g.add_argument("--no-sbd", dest="use_sbd", action="store_const", const=False, default=None,
                   help="pascal: use SegmentationClass instead of SegmentationClassAug")
    g.add_argument("--keep-small", dest="drop_small", action="store_const", const=False, default=None,
                   help="pascal: keep objects under 2*32*32 pixels")
    g.add_argument("--split-style", choices=("interleaved", "contiguous"), default=None, help="coco fold split")
    g.add_argument("--split-files", default=None, metavar="DIR", help="fss: folder with train/val/test.txt class lists")
    g.add_argument("--test-classes", default=None, metavar="A,B", help="folder/voclike: names of the test classes")
    g.add_argument("--class-names", default=None, metavar="FILE", help="voclike: class-name file (line 0 background)")
    g.add_argument("--min-images", type=int, default=None, metavar="N",
                   help="voclike/mix: drop classes with fewer than N images, with one note "
                        "(default 2 for voclike, 6 for mix: a 5-shot episode)")
    g.add_argument("--folds", type=int, default=None, metavar="N",
                   help="mix: number of class folds (default 4; 0 = hold nothing out, for a final model)")
    g.add_argument("--splits", default=None, metavar="DIR",
                   help="mix: read the class folds from DIR/fold<F>.txt (default: a seeded split by class name)")


def source_options(args: argparse.Namespace) -> dict:
    """The data-set options the user gave (others keep the source's defaults)."""
    names = {"cache_dir": "cache_dir", "use_sbd": "use_sbd", "drop_small": "drop_small",
             "split_style": "split_style", "split_files": "split_files", "test_classes": "test_classes",
             "class_names": "class_names_file", "min_images": "min_images", "splits": "splits", "folds": "folds"}
    return {option: getattr(args, flag) for flag, option in names.items() if getattr(args, flag) is not None}


def root_from_args(args: argparse.Namespace) -> str | list[str] | None:
    """--root given once -> that path; several times (data set 'mix' only) -> the list."""
    roots = args.root
    if roots is None or isinstance(roots, str):
        return roots
    if len(roots) > 1 and args.dataset != "mix":
        raise SgoneError(f"data set '{args.dataset}' takes one --root; several roots need --dataset mix")
    return roots if args.dataset == "mix" else roots[0]


def run(args: argparse.Namespace) -> int:
    from sgone.data.sources import build_source

    if args.dataset == "davis2016":
        return run_davis(args)

    source = build_source(args.dataset, root_from_args(args), strict=False, **source_options(args))
    print(f"data set: {source.name}   root: {source.root}")
    for note in getattr(source, "notes", []):
        print(f"note: {note}")
    if getattr(source, "cache_path", None):
        print(f"class lists cached in {source.cache_path}")
    problems = source.check(args.shots) if hasattr(source, "check") else []
    if source.class_names:
        describe(source, args.fold)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
    else:
        print("\nno problems found")
    if args.write_splits:
        if source.problems or not source.class_names:
            raise SgoneError("--write-splits: the data set has problems (listed above); no split written")
        if not hasattr(source, "write_splits"):
            raise SgoneError(f"--write-splits: data set '{args.dataset}' has fixed folds (only mix writes them)")
        for path in source.write_splits(args.write_splits):
            print(f"wrote {path}")
    if args.grid:
        try:
            path = render_grid(source, args)
            print(f"wrote {path}")
        except SgoneError as exc:
            print(f"grid not drawn: {exc}")
            return 2
    return 2 if problems else 0


def describe(source, only_fold: int | None) -> None:
    """Per fold: seen/unseen classes; per class: images per split and the fold that tests it."""
    folds = range(source.folds) if only_fold is None else [only_fold]
    tested_in: dict[int, int] = {}
    for fold in folds:
        test, train = source.classes(fold, "test"), source.classes(fold, "train")
        pairs_train = sum(len(source.items("train", c)) for c in train)
        pairs_val = sum(len(source.items("val", c)) for c in test)
        print(f"fold {fold}: {len(train)} train classes ({pairs_train} image-class pairs in split train), "
              f"{len(test)} test classes ({pairs_val} pairs in split val)")
        names = [source.class_names.get(c, str(c)) for c in test]
        print(f"  test classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
        extra = [c for c in train if getattr(source, "is_train_only", lambda _: False)(c)]
        if extra:
            print(f"  {len(extra)} of the train classes are training-only object classes (DAVIS sequences)")
        for c in test:
            tested_in[c] = fold
    counts = {c: (len(source.items("train", c)), len(source.items("val", c))) for c in sorted(source.class_names)}
    print(f"\n{len(counts)} classes")
    if len(counts) <= FULL_TABLE_MAX:
        width = max(len(n) for n in source.class_names.values())
        print(f"  {'id':>4}  {'class':<{width}}  {'train':>6}  {'val':>6}  test fold")
        for c, (n_train, n_val) in counts.items():
            fold = tested_in.get(c, "-")
            print(f"  {c:>4}  {source.class_names[c]:<{width}}  {n_train:>6}  {n_val:>6}  {fold}")
    else:
        for i, split in enumerate(("train", "val")):
            values = sorted(v[i] for v in counts.values())
            print(f"  images per class in split {split}: min {values[0]}, median {values[len(values) // 2]}, "
                  f"max {values[-1]}, total {sum(values)}")


def render_grid(source, args: argparse.Namespace) -> Path:
    """Sample test episodes, one row each: (support | support overlay) per shot, query | query overlay."""
    from sgone.data.sampler import TestEpisodes
    from sgone.viz import overlay, save_png, tile_grid

    fold = args.fold or 0
    episodes = TestEpisodes(source, fold, shots=args.shots, ways=args.ways, episodes=args.episodes,
                            seed=args.seed, style="pfenet")
    rows, labels = [], []
    for episode in episodes:
        row, label = [], []
        for way, (images, masks, names) in enumerate(zip(episode.support_images, episode.support_masks,
                                                         episode.support_names)):
            for image, mask, name in zip(images, masks, names):
                row += [image, overlay(image, mask)]
                label += [f"{episode.class_names[way]}: {name}", "support mask"]
        row += [episode.query_image, overlay(episode.query_image, episode.query_mask)]
        label += [f"query: {episode.query_name}", "query mask"]
        rows.append(row)
        labels.append(label)
    out = Path(args.grid)
    save_png(out, tile_grid(rows, labels))
    return out


def run_davis(args: argparse.Namespace) -> int:
    """davis2016: per split, its sequences with frame counts and frame-number steps, and every problem."""
    from sgone.data.davis import DavisSource

    if args.root is None:
        raise SgoneError("davis2016 needs --root (the DAVIS folder)")
    source = DavisSource(root_from_args(args))
    print(f"data set: davis2016   root: {source.root}")
    splits = [args.split] if args.split else [s for s in source.available_splits() if s != "trainval"]
    if not splits:
        raise SgoneError(f"{source.root}: no split list (ImageSets/2016/<split>.txt or ImageSets/480p/<split>.txt)")
    problems: list[str] = []
    for split in splits:
        names = source.sequences(split)
        seqs = []
        for name in names:
            try:
                seqs.append(source.sequence(name))
            except SgoneError:
                pass  # listed by check() below
        steps = sorted({s.frame_step for s in seqs})
        print(f"split {split}: {len(names)} sequences, {sum(len(s) for s in seqs)} frames"
              + (f" (frame numbers step {', '.join(map(str, steps))}; scored as given)" if steps != [1] else ""))
        for seq in seqs:
            print(f"  {seq.name:<24} {len(seq):>4} frames")
        problems += source.check(split)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
        return 2
    print("\nno problems found")
    return 0
