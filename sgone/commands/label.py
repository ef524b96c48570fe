"""`sgone label`: label a whole collection of images from a few examples, resumably."""
from __future__ import annotations

import argparse
from pathlib import Path

from sgone import options
from sgone.errors import SgoneError

EXAMPLE = """example:
  sgone label --support cat.jpg --support-mask cat.png --input photos/ --output labels/
  sgone label --class cat --support cat.jpg --support-mask cat.png --class dog --support dog.jpg --support-mask dog.png --input 'photos/**/*.jpg' --output labels/
  sgone label --supports supports.csv --input list.txt --output labels/ --engine ray --address auto --workers 8"""
ENGINES = ("local", "ray")


class _SupportAction(argparse.Action):
    """--class / --support / --support-mask, in order: a --class starts a class, the supports and
    masks after it belong to it (no --class: one class named "object")."""

    def __call__(self, parser, namespace, value, option_string=None):
        from sgone.label.inputs import DEFAULT_CLASS, SupportClass, check_class_name

        groups = getattr(namespace, "support_classes", None)
        if groups is None:
            groups = []
            namespace.support_classes = groups
        if self.dest == "class_name":
            try:
                name = check_class_name(value, "--class")
            except SgoneError as exc:
                parser.error(str(exc))
            if any(g.name == name for g in groups):
                parser.error(f"--class {name}: given twice")
            groups.append(SupportClass(name))
            return
        if not groups:
            groups.append(SupportClass(DEFAULT_CLASS))
        (groups[-1].images if self.dest == "support" else groups[-1].masks).append(value)


def register(subparsers) -> None:
    from sgone.commands.flags import (add_boundary_argument, add_fusion_argument, add_model_arguments,
                                      add_runtime_argument, add_small_object_arguments)

    p = subparsers.add_parser(
        "label", help="label a whole collection of images from a few examples (resumable, COCO output)",
        epilog=EXAMPLE,
        description="Segment every input image with the classes shown by the support examples. Writes "
                    "OUTPUT/masks/<path>.png (0/255 at the image's size; several classes: masks/<class>/<path>.png, "
                    "<path> relative to the --input folder), OUTPUT/annotations.json (COCO instances, RLE) and "
                    "OUTPUT/index.jsonl (one line per input: status, foreground share, mean probability, seconds, "
                    "error). A rerun skips the images already done; another model or support set is refused.")
    p.set_defaults(support_classes=None)
    p.add_argument("--class", dest="class_name", action=_SupportAction, metavar="NAME", default=argparse.SUPPRESS,
                   help="start a class: the --support/--support-mask pairs after it show it (repeat for several "
                        "classes; without it there is one class, 'object')")
    p.add_argument("--support", action=_SupportAction, metavar="IMG", default=argparse.SUPPRESS,
                   help="support image of the current class (repeat for k-shot)")
    p.add_argument("--support-mask", dest="support_mask", action=_SupportAction, metavar="MASK",
                   default=argparse.SUPPRESS, help="mask of the matching --support (0/1, 0/255, palette, RGB non-black)")
    p.add_argument("--supports", metavar="FILE",
                   help="the support set as a list instead: CSV with header image,mask,class or JSONL objects with "
                        "those fields (class optional; paths relative to the file)")
    p.add_argument("--input", nargs="+", action="extend", required=True, metavar="IN",
                   help="folders (recursive), globs ('photos/**/*.jpg', quoted), image files, or manifests: .txt/.lst "
                        "(one path per line), .csv or .jsonl with a 'path' column")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder (reused by a rerun)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: one process with reader/writer threads; ray: Ray Data over a cluster "
                        "(pip install 'sgone[ray]')")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="--engine ray: number of workers (actors), one predictor and one CPU each")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per model call")
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="--engine ray: join this running cluster (default: start a local one for the run)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per model (default: one less than the CPU cores for local, at least 1; "
                        "1 per Ray worker)")
    p.add_argument("--overlays", action="store_true", help="also write OUTPUT/overlays/<path>.png")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an OUTPUT labelled with another model or support set (its masks are removed)")
    p.add_argument("--on-bad-input", choices=options.ON_BAD_INPUT, default="skip",
                   help="a missing or unreadable image is recorded in index.jsonl and skipped (default), or stops "
                        "the run (what is written stays valid)")
    add_fusion_argument(p, "k-shot fusion: average support vectors, max of masks, or vote")
    p.add_argument("--class-id", type=int, default=None,
                   help="class id (1..254) that is the object in palette/label support masks")
    p.add_argument("--resize-masks", action="store_true", help="resize support masks whose size differs from their image")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels (decompression bombs; default PIL's 178,956,970); 0 = no limit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(p)
    add_boundary_argument(p)
    add_small_object_arguments(p)
    add_runtime_argument(p)
    p.set_defaults(func=run)


def support_classes(args: argparse.Namespace):
    """The support set from --class/--support/--support-mask or --supports (not both)."""
    from sgone.label.inputs import read_supports_file

    groups = args.support_classes
    if args.supports and groups:
        raise SgoneError("--supports: give the support set either as a list or with --support, not both")
    if args.supports:
        path = Path(args.supports)
        if not path.is_file():
            raise SgoneError(f"{path}: supports list not found")
        groups = read_supports_file(path)
    if not groups:
        raise SgoneError("no support: give --support IMG --support-mask MASK (or --supports FILE)")
    for g in groups:
        if not g.images and not g.masks:
            raise SgoneError(f"--class {g.name}: no --support/--support-mask pair follows it")
    return groups


def fingerprint(args: argparse.Namespace, groups) -> dict:
    """What must not change between runs into one output folder: model, options, support files."""
    from sgone.commands.flags import model_name
    from sgone.io import file_digest

    model = model_name(args)
    model_id = {"name": model}
    if Path(model).is_file():
        model_id["sha1"] = file_digest(model)
    options = {"size": args.size, "threshold": args.threshold, "fusion": args.fusion, "boundary": args.boundary,
               "runtime": args.runtime, "precision": args.precision, "class_id": args.class_id,
               "resize_masks": args.resize_masks,
               # only when on, so folders written before these steps existed keep their fingerprint
               **{k: True for k in ("self_support", "zoom", "flip") if getattr(args, k)}}
    supports = [{"class": g.name, "shots": [{"image": file_digest(i), "mask": file_digest(m)}
                                            for i, m in zip(g.images, g.masks)]} for g in groups]
    return {"model": model_id, "options": options, "supports": supports}


def model_threads(args: argparse.Namespace) -> int:
    """Torch threads per model: --threads, else 1 per Ray worker (it reserves one CPU) and, locally,
    one less than the cores (the spare core reads and writes: on a busy 2-core machine 2 model
    threads labelled 12 small images/s, 1 thread 161; docs/labelling.md)."""
    from sgone.video.model import default_threads

    return args.threads or (1 if args.engine == "ray" else default_threads())


def check_arguments(args: argparse.Namespace) -> None:
    from sgone.commands.flags import check_mask_arguments, check_model_arguments

    check_model_arguments(args)
    check_mask_arguments(args)
    for flag in ("workers", "batch_size", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise SgoneError(f"--{flag.replace('_', '-')} {value}: must be at least 1")
    if args.engine != "ray" and args.address:
        raise SgoneError("--address: only with --engine ray")


def run(args: argparse.Namespace) -> int:
    from sgone.commands.segment import PREVIEW_SIZE, load_support, working_side
    from sgone.io import MAX_PIXELS
    from sgone.label.inputs import collect_inputs
    from sgone.label.output import LabelOutput
    from sgone.label.work import LabelSpec
    from sgone.commands.flags import model_name
    from sgone.commands.outputs import check_output_folder

    check_arguments(args)
    if args.engine == "ray":
        from sgone.label.ray_engine import require_ray

        require_ray()  # before any work: a missing extra is one line
    groups = support_classes(args)
    output = Path(args.output)
    size = args.size or None
    max_pixels = MAX_PIXELS if args.max_pixels is None else args.max_pixels
    work = working_side(size, PREVIEW_SIZE)
    supports = [load_support(g.images, g.masks, args.class_id, args.resize_masks, size, work, max_pixels)
                for g in groups]
    items = collect_inputs(args.input, exclude=output)
    check_output_folder(output)
    store = LabelOutput(output, [g.name for g in groups], fingerprint(args, groups))
    store.check(args.overwrite)  # a refused folder is refused before the model loads
    spec = LabelSpec(model=model_name(args), classes=tuple(g.name for g in groups),
                     supports=tuple(tuple(pairs) for pairs in supports), size=size, threshold=args.threshold,
                     fusion=args.fusion, boundary=args.boundary, runtime=args.runtime, precision=args.precision,
                     device=args.device, self_support=args.self_support, zoom=args.zoom, flip=args.flip,
                     work_side=work, max_pixels=max_pixels, overlays=args.overlays, threads=model_threads(args))
    cluster = None
    if args.engine == "ray":
        from sgone.label.ray_engine import connect

        cluster, started = connect(args.address, args.workers)  # an unreachable --address: nothing is written
        cluster = cluster if started else None
    try:
        return _label(args, items, store, spec)
    finally:
        if cluster is not None:
            cluster.shutdown()


def _label(args: argparse.Namespace, items, store, spec) -> int:
    import time

    output = store.folder
    store.open(args.overwrite)
    done = set() if args.overwrite else store.done(items)
    todo = [it for it in items if it.key not in done]
    print(f"{len(items)} image(s): {len(done)} done before, {len(todo)} left ({args.engine} engine)")
    counts = {"done": 0, "error": 0}
    start = time.perf_counter()
    bar = None
    if todo and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="label", dynamic_ncols=True)

    def on_result(encoded) -> None:
        status = encoded.record["status"]
        counts[status] = counts.get(status, 0) + 1
        if status == "error" and bar is not None:
            bar.write(f"skipped: {encoded.record['error']}")
        if bar is not None:
            bar.update(1)

    stop = args.on_bad_input == "stop"
    try:
        if todo and args.engine == "ray":
            from sgone.label.ray_engine import run_ray

            run_ray(todo, store, spec, workers=args.workers, batch_size=args.batch_size, address=args.address,
                    stop_on_bad=stop, on_result=on_result)
        elif todo:
            from sgone.label.local import run_local
            from sgone.label.work import build_predictor

            run_local(build_predictor(spec), todo, store, spec, batch_size=args.batch_size, stop_on_bad=stop,
                      on_result=on_result)
    finally:
        if bar is not None:
            bar.close()
        store.close()
        totals = store.finish(items)  # index.jsonl and annotations.json always match what is on disk
    seconds = time.perf_counter() - start
    rate = f", {counts['done'] / seconds:.1f} images/s" if counts["done"] and seconds > 0 else ""
    print(f"labelled {counts['done']} image(s) in {seconds:.1f} s{rate}; {totals['done']} done, "
          f"{totals['error']} failed (see {output / 'index.jsonl'}); COCO: {output / 'annotations.json'}")
    return 0
