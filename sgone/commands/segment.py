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
    p.add_argument("--class-id", type=int, default=None, help="class id to take from palette/label masks")
    p.add_argument("--resize-masks", action="store_true", help="resize masks whose size differs from their image")
    p.add_argument("--fusion", choices=("avg", "max", "vote"), default="avg",
                   help="k-shot fusion: average support vectors, max of masks, or vote (default avg)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def load_support(images: list[str], masks: list[str], class_id: int | None, resize_masks: bool):
    """Read and check support pairs; errors name the offending file."""
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
        if mask.shape != image.shape[:2]:
            if not resize_masks:
                raise SgoneError(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                                 f"{image_path} size {image.shape[1]}x{image.shape[0]} (use --resize-masks)")
            mask = np.asarray(Image.fromarray(mask).resize((image.shape[1], image.shape[0]), Image.NEAREST))
        if not (mask == 1).any():
            raise SgoneError(f"{mask_path}: the mask is empty (no object pixels)")
        pairs.append((image, mask))
    return pairs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sgone.io import read_image, save_image, write_mask_png
    from sgone.predictor import Predictor
    from sgone.viz import heatmap, overlay

    if args.size is not None and args.size < 0:
        raise SgoneError(f"--size {args.size}: must be positive (0 keeps the original size)")
    pairs = load_support(args.support, args.support_mask, args.class_id, args.resize_masks)
    queries = [Path(q) for q in args.query]
    stems: dict[str, Path] = {}
    for q in queries:
        if q.stem in stems:
            raise SgoneError(f"{q}: has the same name stem as {stems[q.stem]}; outputs would overwrite each other")
        stems[q.stem] = q
        read_image(q)  # fail on a bad query before anything is written
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise SgoneError(f"{output}: exists and is not a folder")
    predictor = Predictor(args.model, device=args.device, size=args.size or None,
                          threshold=args.threshold, fusion=args.fusion)
    predictor.set_support([p[0] for p in pairs], [p[1] for p in pairs])
    output.mkdir(parents=True, exist_ok=True)
    for q in tqdm(queries, desc="segment", unit="img", disable=len(queries) < 2):
        image = read_image(q)
        result = predictor.predict(image)
        write_mask_png(output / f"{q.stem}.png", result.mask)
        save_image(output / f"{q.stem}_overlay.png", overlay(image, result.mask))
        save_image(output / f"{q.stem}_similarity.png", heatmap(result.similarity, image))
    print(f"wrote {len(queries)} mask(s) with overlays and similarity maps to {output}")
    return 0
