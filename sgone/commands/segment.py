"""`sgone segment`: one-shot / k-shot segmentation of query images from support images + masks."""
from __future__ import annotations

import argparse
from pathlib import Path

from sgone.errors import SgoneError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that runs a predictor."""
    parser.add_argument("--model", default=None,
                        help="registered model name or checkpoint path (default: the training-free model)")
    parser.add_argument("--size", type=int, default=473,
                        help="longer image side fed to the network (default 473); 0 keeps the original size")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold")


def register(subparsers) -> None:
    p = subparsers.add_parser("segment", help="segment query images given support images and masks",
                              description="Segment the object class shown by the support image(s) and mask(s) "
                                          "in every query image.")
    p.add_argument("--support", action="append", required=True, metavar="IMG",
                   help="support image (repeat for k-shot)")
    p.add_argument("--support-mask", action="append", required=True, metavar="MASK",
                   help="mask of the matching --support (0/1, 0/255, VOC palette, or RGB non-black = object)")
    p.add_argument("--query", nargs="+", required=True, metavar="Q", help="query image(s)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for <stem>.png, _overlay.png, _similarity.png")
    p.add_argument("--class-id", type=int, default=None, help="class id (1..254) that is the object in palette/label masks; others are background")
    p.add_argument("--resize-masks", action="store_true", help="resize masks whose size differs from their image")
    p.add_argument("--fusion", choices=("avg", "max", "vote"), default="avg",
                   help="k-shot fusion: average support vectors, max of masks, or vote (default avg)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def check_model_arguments(args: argparse.Namespace) -> None:
    """Reject bad values of the shared model flags before any file is read or model built."""
    import math

    if args.size is not None and args.size < 0:
        raise SgoneError(f"--size {args.size}: must be positive (0 keeps the original size)")
    if not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
        raise SgoneError(f"--threshold {args.threshold}: must be between 0 and 1")


def load_support(images: list[str], masks: list[str], class_id: int | None, resize_masks: bool,
                 size: int | None = None):
    """Read and check support pairs; errors name the offending file.

    `size` is the network input size (None = original): an object too thin to survive the
    resize to it is reported against its mask file here rather than as "support N" later.
    """
    import numpy as np
    from PIL import Image

    from sgone.io import read_image, read_mask

    if len(masks) > len(images):
        raise SgoneError(f"{masks[len(images)]}: more support masks ({len(masks)}) than support images ({len(images)})")
    if len(images) > len(masks):
        raise SgoneError(f"{images[len(masks)]}: support image has no --support-mask "
                         f"({len(images)} images, {len(masks)} masks)")
    pairs = []
    for image_path, mask_path in zip(images, masks):
        image = read_image(image_path)
        mask = read_mask(mask_path, class_id=class_id)
        (h, w), (mh, mw) = image.shape[:2], mask.shape
        if (mh, mw) != (h, w):
            if not resize_masks:
                hint = "; swapped sides: was one of them rotated by its EXIF orientation?" if (mh, mw) == (w, h) else ""
                raise SgoneError(f"{mask_path}: mask size {mw}x{mh} differs from image {image_path} size {w}x{h} "
                                 f"(use --resize-masks to resize the mask{hint})")
            mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
        if not (mask == 1).any():
            raise SgoneError(f"{mask_path}: the mask is empty (no object pixels)")
        from sgone.predictor import input_size, mask_tensor  # imports torch: only once files look fine

        hw = input_size(h, w, size)
        if not (mask_tensor(mask, hw) == 1).any():
            raise SgoneError(f"{mask_path}: the object is too thin to survive resizing to {hw[1]}x{hw[0]}; "
                             f"use a larger --size")
        pairs.append((image, mask))
    return pairs


OUTPUT_SUFFIXES = ("", "_overlay", "_similarity")


def output_paths(output: Path, query: Path) -> list[Path]:
    """The mask, overlay and similarity files written for one query."""
    return [output / f"{query.stem}{suffix}.png" for suffix in OUTPUT_SUFFIXES]


def check_queries(queries: list[Path], output: Path, inputs: list[Path]) -> None:
    """Fail before anything is written: unreadable queries, clashing output names, a bad output folder."""
    import os

    from sgone.io import read_image

    check_output_folder(output)
    stems: dict[str, Path] = {}
    names: dict[str, Path] = {}
    resolved_inputs = {os.path.realpath(p): p for p in inputs}
    for q in queries:
        if q.stem in stems and os.path.realpath(q) == os.path.realpath(stems[q.stem]):
            raise SgoneError(f"{q}: given twice as --query")
        if q.stem in stems:
            raise SgoneError(f"{q}: has the same name stem as {stems[q.stem]}; outputs would overwrite each other")
        stems[q.stem] = q
    for q in queries:
        for out in output_paths(output, q):
            if out.name in names:
                raise SgoneError(f"{q}: its output {out.name} would overwrite an output of {names[out.name]}; "
                                 f"rename one of them")
            names[out.name] = q
            real = os.path.realpath(out)
            if real in resolved_inputs:
                raise SgoneError(f"{out}: writing it would overwrite the input {resolved_inputs[real]}; "
                                 f"choose another --output folder")
            if out.is_dir():
                raise SgoneError(f"{out}: is a folder; cannot write the result there")
    for q in queries:
        read_image(q)  # fail on a bad query before anything is written


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


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from sgone.io import read_image
    from sgone.viz import heatmap, overlay

    check_model_arguments(args)
    if args.class_id is not None and (args.class_id <= 0 or args.class_id == 255):
        raise SgoneError(f"--class-id {args.class_id}: not an object class (0 is background, 255 is ignore)")
    size = args.size or None
    pairs = load_support(args.support, args.support_mask, args.class_id, args.resize_masks, size)
    queries = [Path(q) for q in args.query]
    output = Path(args.output)
    check_queries(queries, output, [Path(p) for p in [*args.support, *args.support_mask, *args.query]])
    from sgone.predictor import Predictor  # imports torch: only once the inputs look fine

    predictor = Predictor(args.model, device=args.device, size=size,
                          threshold=args.threshold, fusion=args.fusion)
    predictor.set_support([p[0] for p in pairs], [p[1] for p in pairs])
    make_output_folder(output)
    for q in tqdm(queries, desc="segment", unit="img", disable=len(queries) < 2):
        image = read_image(q)
        result = predictor.predict(image)
        # everything for this query is computed before its first file is written
        mask_path, overlay_path, similarity_path = output_paths(output, q)
        write_results({
            mask_path: np.where(result.mask == 1, 255, 0).astype(np.uint8),
            overlay_path: overlay(image, result.mask),
            similarity_path: heatmap(result.similarity, image),
        })
    print(f"wrote {len(queries)} mask(s) with overlays and similarity maps to {output}")
    return 0
