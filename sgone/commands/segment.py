"""`sgone segment`: one-shot / k-shot segmentation of query images from support images + masks.

Big images stay within bounded memory: queries (and supports) are read shrunk to a working
size (the larger of `--preview-size` and `--size`), the overlay and heat map are drawn at the
preview size, and the full-size mask is upsampled from the working-size score in bands of rows.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from sgone.commands.flags import (SKIP_HINT, add_boundary_argument, add_fusion_argument, add_model_arguments,
                                  add_on_bad_input_argument, add_runtime_argument, add_small_object_arguments,
                                  add_weights_argument, build_predictor, check_mask_arguments, check_model_arguments,
                                  model_name, required_with_alias)
from sgone.commands.outputs import check_output_folder, make_output_folder, write_results
from sgone.errors import SgoneError

EXAMPLE = """example:
  sgone segment --support cat.jpg --support-mask cat_mask.png --input photos/ q1.jpg --output out/"""
OUTPUT_SUFFIXES = ("", "_overlay", "_similarity")
OUTPUT_KINDS = ("mask", "overlay", "similarity")
SUMMARY = "summary.json"
PREVIEW_SIZE = 2048
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment", help="segment query images given support images and masks", epilog=EXAMPLE,
        description="Segment the object class shown by the support image(s) and mask(s) in every query image. "
                    "Writes OUTPUT/<stem>.png (0/255 mask at the query's size), <stem>_overlay.png and "
                    "<stem>_similarity.png (previews, at most --preview-size) and summary.json.")
    p.add_argument("--support", action="append", required=True, metavar="IMG",
                   help="support image (repeat for k-shot)")
    p.add_argument("--support-mask", action="append", required=True, metavar="MASK",
                   help="mask of the matching --support (0/1, 0/255, VOC palette, or RGB non-black = object)")
    required_with_alias(p, "--input", "--query", "query", nargs="+", metavar="Q",
                        help="query image(s) or folder(s) of images (taken in name order)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for <stem>.png, _overlay.png, _similarity.png and summary.json; queries with the "
                        "same stem get <stem>-2, <stem>-3, ... in the order given")
    p.add_argument("--class-id", type=int, default=None,
                   help="class id (1..254) that is the object in palette/label masks; others are background")
    p.add_argument("--resize-masks", action="store_true", help="resize masks whose size differs from their image")
    add_fusion_argument(p, "k-shot fusion: average support vectors, max of masks, or vote (default avg)")
    add_on_bad_input_argument(p, "query", old="--on-bad-query")
    p.add_argument("--preview-size", type=int, default=PREVIEW_SIZE, metavar="N",
                   help=f"longer side of the overlay and heat map (default {PREVIEW_SIZE}; smaller images keep their "
                        "size); 0 = full size, which for huge images costs memory")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels, a guard against decompression bombs (default: 178,956,970, "
                        "PIL's limit); 0 = no limit")
    add_weights_argument(p)
    add_model_arguments(p)
    add_boundary_argument(p)
    add_small_object_arguments(p)
    add_runtime_argument(p)
    p.set_defaults(func=run)


def working_side(size: int | None, preview: int | None) -> int | None:
    """Longer side of the images handed to the predictor: enough for the network and the previews."""
    return None if size is None or preview is None else max(size, preview)


def load_support(images: list[str], masks: list[str], class_id: int | None, resize_masks: bool,
                 size: int | None = None, work: int | None = None, max_pixels: int | None = None):
    """Read and check support pairs; errors name the offending file.

    `size` is the network input size (None = original): an object too thin to survive the
    resize to it is reported against its mask file here rather than as "support N" later.
    `work`: images above this longer side are shrunk (masks checked at full size, then shrunk too).
    """
    import numpy as np
    from PIL import Image

    from sgone.io import MAX_PIXELS, read_image_fit, read_mask

    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if len(masks) > len(images):
        raise SgoneError(f"{masks[len(images)]}: more support masks ({len(masks)}) than support images ({len(images)})")
    if len(images) > len(masks):
        raise SgoneError(f"{images[len(masks)]}: support image has no --support-mask "
                         f"({len(images)} images, {len(masks)} masks)")
    pairs = []
    for image_path, mask_path in zip(images, masks):
        image, (h, w) = read_image_fit(image_path, work, max_pixels)
        mask = read_mask(mask_path, class_id=class_id, max_pixels=max_pixels)
        mh, mw = mask.shape
        if (mh, mw) != (h, w):
            if not resize_masks:
                hint = "; swapped sides: was one of them rotated by its EXIF orientation?" if (mh, mw) == (w, h) else ""
                raise SgoneError(f"{mask_path}: mask size {mw}x{mh} differs from image {image_path} size {w}x{h} "
                                 f"(use --resize-masks to resize the mask{hint})")
            mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
        if not (mask == 1).any():
            raise SgoneError(f"{mask_path}: the mask is empty (no object pixels)")
        if image.shape[:2] != mask.shape:  # the image was read shrunk
            mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST))
        from sgone.inputs import input_size, mask_tensor  # imports torch: only once files look fine

        hw = input_size(*image.shape[:2], size)
        if not (mask_tensor(mask, hw) == 1).any():
            raise SgoneError(f"{mask_path}: the object is too thin to survive resizing to {hw[1]}x{hw[0]}; "
                             f"use a larger --size")
        pairs.append((image, mask))
    return pairs


def expand_queries(values: list[str]) -> list[Path]:
    """Query arguments -> image files: a folder stands for its images in name order."""
    from sgone.io import IMAGE_SUFFIXES, list_images

    queries: list[Path] = []
    for value in values:
        path = Path(value)
        if path.is_dir():
            found = [p for p in list_images(path) if not p.name.startswith(".")]
            if not found:
                raise SgoneError(f"{path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            queries += found
        else:
            queries.append(path)
    return queries


def output_paths(output: Path, stem: str) -> list[Path]:
    """The mask, overlay and similarity files written for one output stem."""
    return [output / f"{stem}{suffix}.png" for suffix in OUTPUT_SUFFIXES]


def plan_outputs(queries: list[Path], output: Path, inputs: list[Path]) -> tuple[list[list[Path]], list[str]]:
    """Output files of every query, and notes on renamed ones.

    A query whose names are taken by an earlier one (equal stems from different folders, or
    x.jpg beside x_overlay.png) gets <stem>-2, -3, ...: deterministic in the order given.
    Names are compared case-insensitively, as some file systems do.
    """
    import os

    check_output_folder(output)
    seen: dict[str, Path] = {}
    taken: dict[str, Path] = {}
    resolved_inputs = {os.path.realpath(p): p for p in inputs}
    plans, notes = [], []
    for q in queries:
        real = os.path.realpath(q)
        if real in seen:
            raise SgoneError(f"{q}: given twice as --input" + (f" (also as {seen[real]})" if str(seen[real]) != str(q)
                                                                 else ""))
        seen[real] = q
        stem, n = q.stem, 1
        while any(p.name.casefold() in taken for p in output_paths(output, stem)):
            n += 1
            stem = f"{q.stem}-{n}"
        paths = output_paths(output, stem)
        if n > 1:
            owner = next(taken[p.name.casefold()] for p in output_paths(output, q.stem) if p.name.casefold() in taken)
            notes.append(f"note: {q} is written as {stem}.png, {stem}_overlay.png, {stem}_similarity.png "
                         f"(the names of {q.stem} are taken by {owner})")
        for out in paths:
            taken[out.name.casefold()] = q
            real_out = os.path.realpath(out)
            if real_out in resolved_inputs:
                raise SgoneError(f"{out}: writing it would overwrite the input {resolved_inputs[real_out]}; "
                                 f"choose another --output folder")
            if out.is_dir():
                raise SgoneError(f"{out}: is a folder; cannot write the result there")
        plans.append(paths)
    return plans, notes


def query_outputs(image, full_hw: tuple[int, int], result, keep: Callable, preview: int | None):
    """One query's files (mask at full size, previews at most `preview`) and its statistics.

    image: the hxwx3 uint8 query as predicted (maybe shrunk); result: its Prediction (hxw).
    -> ([mask, overlay, heat map] arrays, {"foreground_share", "mean_foreground_probability"}).
    """
    import numpy as np

    from sgone.upsample import fit_hw, full_size_mask, resize
    from sgone.viz import heatmap, overlay

    if image.shape[:2] == tuple(full_hw):  # predicted at full size: the predictor's own mask
        obj = result.mask == 1
        mask, count = np.where(obj, 255, 0).astype(np.uint8), int(obj.sum())
        total = float(result.probability[obj].sum(dtype=np.float64))
    else:
        mask, count, total = full_size_mask(result.probability, full_hw, keep)
    view_hw = fit_hw(image.shape[:2], preview)
    view = resize(image, view_hw)
    pictures = [overlay(view, resize(result.mask, view_hw, nearest=True)),
                heatmap(resize(result.similarity.astype(np.float32), view_hw), view, colorbar=True)]
    stats = {"foreground_share": round(count / (full_hw[0] * full_hw[1]), 6),
             "mean_foreground_probability": round(total / count, 4) if count else None}
    return [mask, *pictures], stats


def run(args: argparse.Namespace) -> int:
    import json
    import time
    import warnings

    from sgone import ops
    from sgone.errors import SgoneWarning
    from sgone.inputs import small_input_note
    from sgone.io import MAX_PIXELS, atomic_write, read_image_fit

    check_model_arguments(args)
    check_mask_arguments(args)
    if args.preview_size < 0:
        raise SgoneError(f"--preview-size {args.preview_size}: must be positive (0 = full size)")
    size, preview = args.size or None, args.preview_size or None
    max_pixels = MAX_PIXELS if args.max_pixels is None else args.max_pixels
    work = working_side(size, preview)
    pairs = load_support(args.support, args.support_mask, args.class_id, args.resize_masks, size, work, max_pixels)
    queries = expand_queries(args.query)
    output = Path(args.output)
    inputs = [Path(p) for p in [*args.support, *args.support_mask]] + queries
    plans, notes = plan_outputs(queries, output, inputs)
    stop = args.on_bad_input == "stop"
    if stop:
        for q in queries:
            try:
                read_image_fit(q, work, max_pixels)  # fail on a bad query before anything is written
            except SgoneError as exc:
                raise SgoneError(f"{exc} {SKIP_HINT}") from None
    predictor = build_predictor(args, args.fusion)  # imports torch: only once the inputs look fine
    predictor.set_support([p[0] for p in pairs], [p[1] for p in pairs])
    shots = len(pairs)

    def keep(score):
        return ops.keep_foreground(score, args.fusion, shots, args.threshold)

    make_output_folder(output)
    for note in notes:
        print(note)
    done, skipped = [], []
    for i, (q, paths) in enumerate(zip(queries, plans), 1):
        start = time.perf_counter()
        try:
            image, full_hw = read_image_fit(q, work, max_pixels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SgoneWarning)  # said below, naming the file
                result = predictor.predict(image)
        except SgoneError as exc:
            if stop:
                raise
            skipped.append({"input": str(q), "error": str(exc)})
            print(f"[{i}/{len(queries)}] skipped: {exc}")
            continue
        note = small_input_note(full_hw, str(q))
        if note:
            warnings.warn(note, SgoneWarning, stacklevel=1)
        arrays, stats = query_outputs(image, full_hw, result, keep, preview)
        del image, result
        write_results(dict(zip(paths, arrays)))  # everything for this query is computed before its first file
        seconds = round(time.perf_counter() - start, 3)
        done.append({"input": str(q), "outputs": {k: p.name for k, p in zip(OUTPUT_KINDS, paths)},
                     "width": full_hw[1], "height": full_hw[0], **stats, "seconds": seconds})
        mean = stats["mean_foreground_probability"]
        print(f"[{i}/{len(queries)}] {q} -> {paths[0]}: foreground {stats['foreground_share']:.1%}"
              f"{'' if mean is None else f', mean probability {mean:.2f}'}, {seconds:.2f} s")
    # what --runtime/--precision auto chose (the flags themselves for a predictor that does not say)
    summary = {"model": model_name(args), "runtime": getattr(predictor, "runtime", args.runtime),
               "precision": getattr(predictor, "precision", args.precision),
               "size": args.size,
               "threshold": args.threshold, "fusion": args.fusion, "preview_size": args.preview_size,
               "self_support": args.self_support, "zoom": args.zoom, "flip": args.flip,
               "support": [{"image": i, "mask": m} for i, m in zip(args.support, args.support_mask)],
               "queries": done, "skipped": skipped}
    try:
        atomic_write(output / SUMMARY, json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        raise SgoneError(f"{output / SUMMARY}: cannot write ({exc.strerror or exc})") from None
    if not done:
        raise SgoneError(f"{output}: none of the {len(queries)} queries could be segmented (see {SUMMARY})")
    tail = f"; skipped {len(skipped)} bad quer{'y' if len(skipped) == 1 else 'ies'}" if skipped else ""
    print(f"wrote {len(done)} mask(s) with overlays and similarity maps to {output}, and {SUMMARY}{tail}")
    return 0
