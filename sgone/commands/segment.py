"""`sgone segment`: one-shot / k-shot segmentation of query images from support images + masks.

Big images stay within bounded memory: queries (and supports) are read shrunk to a working
size (the larger of `--preview-size` and `--size`), the overlay and heat map are drawn at the
preview size, and the full-size mask is upsampled from the working-size score in bands of rows.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from sgone.errors import SgoneError

EXAMPLE = """example:
  sgone segment --support cat.jpg --support-mask cat_mask.png --query photos/ q1.jpg --output out/"""
OUTPUT_SUFFIXES = ("", "_overlay", "_similarity")
OUTPUT_KINDS = ("mask", "overlay", "similarity")
SUMMARY = "summary.json"
PREVIEW_SIZE = 2048
BAND_PIXELS = 1 << 22  # pixels per band of the full-size mask: ~16 MB of float32 at a time


DEFAULT_MODEL_HELP = ("sgone-dinov2_s14-mobilenet_v2-real, SG-One trained on real photos on DINOv2 + MobileNetV2 "
                      "features; prototype-mobilenet_v2, the training-free model, is about 5x faster")


def add_model_arguments(parser: argparse.ArgumentParser, default_help: str = DEFAULT_MODEL_HELP) -> None:
    """Flags shared by every command that runs a predictor."""
    parser.add_argument("--model", default=None,
                        help=f"registered model name or checkpoint path (default: {default_help})")
    parser.add_argument("--size", type=int, default=473,
                        help="longer image side fed to the network (default 473); 0 keeps the original size")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto: cuda if available)")
    parser.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold")


def add_boundary_argument(parser: argparse.ArgumentParser) -> None:
    """`--boundary`, for the still-image commands (video modes have their own upsampling)."""
    parser.add_argument("--boundary", choices=("none", "guided"), default="none",
                        help="from the network's stride-8 grid to pixels: none (default: bilinear) or guided (a "
                             "guided filter moves the mask's edges onto the image's; helps at --size 473 and "
                             "above with MobileNetV2 models, hurts at small sizes)")


def add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    """`--runtime`, for commands whose predictor `build_predictor` makes."""
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="torch, or onnx: ONNX Runtime on the CPU (pip install 'sgone[onnx]'), the model "
                             "exported when the command starts (a few seconds) or --model a folder from "
                             "`sgone export --dynamic`")


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    """`--weights`, for commands that build their predictor with `build_predictor`."""
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="ImageNet weight file (or a folder holding it) for the backbone of a registered --model, "
                             "e.g. vgg16-397923af.pth or resnet50-0676ba61.pth, which sgone does not ship "
                             "(default: found offline in installed packages or torch's hub cache)")


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
    p.add_argument("--query", nargs="+", required=True, metavar="Q",
                   help="query image(s) or folder(s) of images (taken in name order)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for <stem>.png, _overlay.png, _similarity.png and summary.json; queries with the "
                        "same stem get <stem>-2, <stem>-3, ... in the order given")
    p.add_argument("--class-id", type=int, default=None,
                   help="class id (1..254) that is the object in palette/label masks; others are background")
    p.add_argument("--resize-masks", action="store_true", help="resize masks whose size differs from their image")
    p.add_argument("--fusion", choices=("avg", "max", "vote"), default="avg",
                   help="k-shot fusion: average support vectors, max of masks, or vote (default avg)")
    p.add_argument("--on-bad-query", choices=("stop", "skip"), default="stop",
                   help="a missing or unreadable query stops the run before anything is written (default stop), "
                        "or is reported, listed in summary.json and skipped")
    p.add_argument("--preview-size", type=int, default=PREVIEW_SIZE, metavar="N",
                   help=f"longer side of the overlay and heat map (default {PREVIEW_SIZE}; smaller images keep their "
                        "size); 0 = full size, which for huge images costs memory")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels, a guard against decompression bombs (default: 178,956,970, "
                        "PIL's limit); 0 = no limit")
    add_weights_argument(p)
    add_model_arguments(p)
    add_boundary_argument(p)
    add_runtime_argument(p)
    p.set_defaults(func=run)


def check_model_arguments(args: argparse.Namespace) -> None:
    """Reject bad values of the shared model flags before any file is read or model built."""
    import math

    if args.size is not None and args.size < 0:
        raise SgoneError(f"--size {args.size}: must be positive (0 keeps the original size)")
    if not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        raise SgoneError(f"--threshold {args.threshold}: must be between 0 and 1")
    weights = getattr(args, "weights", None)
    if weights is not None:
        from sgone.models.registry import DEFAULT_MODEL, MODELS

        name = args.model or DEFAULT_MODEL
        if getattr(args, "runtime", "torch") == "onnx" and Path(name).is_dir():
            raise SgoneError(f"--weights {weights}: {name} is an exported model, which holds its own weights")
        if name not in MODELS:
            raise SgoneError(f"--weights {weights}: only for a registered --model name; {name} is a checkpoint, "
                             f"which holds its own weights")
        if not Path(weights).exists():
            raise SgoneError(f"{weights}: no such weights file")


def build_predictor(args: argparse.Namespace, fusion: str = "avg"):
    """The predictor for --model/--weights/--device/--size/--threshold (model loaded once, BatchNorm folded)."""
    from sgone import predictor as predictors

    model, runtime = args.model, getattr(args, "runtime", "torch")
    boundary = getattr(args, "boundary", "none")
    if getattr(args, "weights", None) is not None:
        from sgone.models.registry import DEFAULT_MODEL, load_model

        device = predictors.resolve_device(args.device)
        model = predictors.prepare_for_inference(load_model(args.model or DEFAULT_MODEL, device, weights=args.weights),
                                                 device)
        return predictors.Predictor(model, device=device, size=args.size or None, threshold=args.threshold,
                                    fusion=fusion, fuse=False, runtime=runtime, boundary=boundary)
    return predictors.Predictor(model, device=args.device, size=args.size or None, threshold=args.threshold,
                                fusion=fusion, runtime=runtime, boundary=boundary)


def fit_hw(hw: tuple[int, int], side: int | None) -> tuple[int, int]:
    """(H, W) shrunk, aspect kept, so the longer side is at most `side` (None = unchanged)."""
    h, w = hw
    if side is None or max(h, w) <= side:
        return h, w
    scale = side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


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
        from sgone.predictor import input_size, mask_tensor  # imports torch: only once files look fine

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
            raise SgoneError(f"{q}: given twice as --query" + (f" (also as {seen[real]})" if str(seen[real]) != str(q)
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


def check_output_folder(output: Path) -> None:
    """The output folder, or the nearest existing folder above it, must be a folder."""
    for folder in (output, *output.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise SgoneError(f"{folder}: exists and is not a folder" +
                                 ("" if folder == output else f"; cannot create {output}"))
            return


def make_output_folder(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SgoneError(f"{output}: exists and is not a folder") from None
    except OSError as exc:
        raise SgoneError(f"{output}: cannot create the output folder ({exc.strerror or exc})") from None


def write_results(files: dict) -> None:
    """Write {path: HxW or HxWx3 uint8 array} as PNGs, each atomically; OSError -> SgoneError."""
    from sgone.io import save_image

    for path, array in files.items():
        try:
            save_image(path, array)
        except OSError as exc:
            raise SgoneError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _taps(n_in: int, n_out: int):
    """Source indices and weights of a bilinear resize along one axis (align_corners=False, as torch)."""
    import numpy as np

    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (src - low).astype(np.float32)


def full_size_mask(score, full_hw: tuple[int, int], keep: Callable):
    """Upsample an hxw float score map bilinearly to full_hw (H, W) in bands of rows and apply `keep`.

    -> (HxW uint8 mask, 255 = object; object pixel count; sum of the score over the object).
    No full-size float array exists: each band is about BAND_PIXELS floats.
    """
    import numpy as np

    score = np.asarray(score, dtype=np.float32)
    (h, w), (big_h, big_w) = score.shape, full_hw
    y0, y1, fy = _taps(h, big_h)
    x0, x1, fx = _taps(w, big_w)
    mask = np.zeros((big_h, big_w), np.uint8)
    count, total = 0, 0.0
    band = max(1, BAND_PIXELS // big_w)
    for top in range(0, big_h, band):
        rows = slice(top, min(top + band, big_h))
        half = score[y0[rows]]  # (band, w), then (band, W): in place, two band arrays at a time
        half += (score[y1[rows]] - half) * fy[rows, None]
        full = np.take(half, x0, axis=1)
        step = np.take(half, x1, axis=1)
        step -= full
        step *= fx
        full += step
        del step
        kept = keep(full)
        mask[rows][kept] = 255
        count += int(kept.sum())
        total += float(np.sum(full, where=kept, dtype=np.float64))
    return mask, count, total


def _resize(array, hw: tuple[int, int], nearest: bool = False):
    """An HxW(x3) uint8 or HxW float32 array resized to hw with PIL (bilinear or nearest)."""
    import numpy as np
    from PIL import Image

    if array.shape[:2] == tuple(hw):
        return array
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(array).resize((hw[1], hw[0]), resample))


def query_outputs(image, full_hw: tuple[int, int], result, keep: Callable, preview: int | None):
    """One query's files (mask at full size, previews at most `preview`) and its statistics.

    image: the hxwx3 uint8 query as predicted (maybe shrunk); result: its Prediction (hxw).
    -> ([mask, overlay, heat map] arrays, {"foreground_share", "mean_foreground_probability"}).
    """
    import numpy as np

    from sgone.viz import heatmap, overlay

    if image.shape[:2] == tuple(full_hw):  # predicted at full size: the predictor's own mask
        obj = result.mask == 1
        mask, count = np.where(obj, 255, 0).astype(np.uint8), int(obj.sum())
        total = float(result.probability[obj].sum(dtype=np.float64))
    else:
        mask, count, total = full_size_mask(result.probability, full_hw, keep)
    view_hw = fit_hw(image.shape[:2], preview)
    view = _resize(image, view_hw)
    pictures = [overlay(view, _resize(result.mask, view_hw, nearest=True)),
                heatmap(_resize(result.similarity.astype(np.float32), view_hw), view, colorbar=True)]
    stats = {"foreground_share": round(count / (full_hw[0] * full_hw[1]), 6),
             "mean_foreground_probability": round(total / count, 4) if count else None}
    return [mask, *pictures], stats


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from sgone import ops
    from sgone.io import MAX_PIXELS, atomic_write, read_image_fit

    check_model_arguments(args)
    if args.class_id is not None and (args.class_id <= 0 or args.class_id == 255):
        raise SgoneError(f"--class-id {args.class_id}: not an object class (0 is background, 255 is ignore)")
    if args.preview_size < 0:
        raise SgoneError(f"--preview-size {args.preview_size}: must be positive (0 = full size)")
    if args.max_pixels is not None and args.max_pixels < 0:
        raise SgoneError(f"--max-pixels {args.max_pixels}: must be positive (0 = no limit)")
    size, preview = args.size or None, args.preview_size or None
    max_pixels = MAX_PIXELS if args.max_pixels is None else args.max_pixels
    work = working_side(size, preview)
    pairs = load_support(args.support, args.support_mask, args.class_id, args.resize_masks, size, work, max_pixels)
    queries = expand_queries(args.query)
    output = Path(args.output)
    inputs = [Path(p) for p in [*args.support, *args.support_mask]] + queries
    plans, notes = plan_outputs(queries, output, inputs)
    stop = args.on_bad_query == "stop"
    if stop:
        for q in queries:
            read_image_fit(q, work, max_pixels)  # fail on a bad query before anything is written
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
            result = predictor.predict(image)
        except SgoneError as exc:
            if stop:
                raise
            skipped.append({"input": str(q), "error": str(exc)})
            print(f"[{i}/{len(queries)}] skipped: {exc}")
            continue
        arrays, stats = query_outputs(image, full_hw, result, keep, preview)
        del image, result
        write_results(dict(zip(paths, arrays)))  # everything for this query is computed before its first file
        seconds = round(time.perf_counter() - start, 3)
        done.append({"input": str(q), "outputs": {k: p.name for k, p in zip(OUTPUT_KINDS, paths)},
                     "width": full_hw[1], "height": full_hw[0], **stats, "seconds": seconds})
        mean = stats["mean_foreground_probability"]
        print(f"[{i}/{len(queries)}] {q} -> {paths[0]}: foreground {stats['foreground_share']:.1%}"
              f"{'' if mean is None else f', mean probability {mean:.2f}'}, {seconds:.2f} s")
    summary = {"model": args.model or "default", "runtime": args.runtime, "size": args.size,
               "threshold": args.threshold, "fusion": args.fusion, "preview_size": args.preview_size,
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
