"""Segment a photo with a model from `sgone export`, using only onnxruntime, numpy and pillow.

    sgone export --model prototype-mobilenet_v2 --output onnx-model/   (or any exportable model)
    python examples/onnx_segment.py onnx-model/ --support cat.jpg --support-mask cat_mask.png \\
        --input photo.jpg --output photo_mask.png [--truth photo_truth.png]

No torch and no sgone import: this file is what a deployment needs besides the exported folder.
Masks: non-zero = object (0/1 or 0/255 PNGs). Writes a 0/255 mask of the query's size; with
--truth (a mask like --support-mask) it prints the IoU against it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def load(folder: Path) -> tuple[dict, dict[str, ort.InferenceSession]]:
    """manifest.json and one session per graph (all optimisations; OMP_NUM_THREADS threads if set)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0"))  # 0: ORT's default, the cores
    sessions = {g: ort.InferenceSession(str(folder / f), options, providers=["CPUExecutionProvider"])
                for g, f in manifest["files"].items()}
    return manifest, sessions


def input_hw(height: int, width: int, manifest: dict) -> tuple[int, int]:
    """The network input size: the longer side scaled to the export size (dynamic), or size x size."""
    size = manifest["input"]["size"]
    if not manifest["input"]["dynamic"]:
        return size, size
    scale = size / max(height, width)
    return max(8, round(height * scale)), max(8, round(width * scale))


def image_array(image: Image.Image, hw: tuple[int, int]) -> np.ndarray:
    """PIL image -> (1,3,h,w) float32 RGB in [0,1] (normalisation is inside the graph)."""
    rgb = np.asarray(image.convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def resize_channels(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(C,h,w) float32 -> (C,H,W): pillow's bilinear, antialiased when shrinking (as torch's antialias=True)."""
    return np.stack([np.asarray(Image.fromarray(c, mode="F").resize((hw[1], hw[0]), Image.BILINEAR)) for c in x])


def starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one side, `stride` apart, the last flush with the end."""
    return [0] if length <= tile else list(range(0, length - tile, stride)) + [length - tile]


def semantic_map(session: ort.InferenceSession, info: dict, image: np.ndarray) -> np.ndarray:
    """(1,3,h,w) encoder input -> DINOv2's stitched patch map (1,384,H/14,W/14): the manifest's "semantic" steps."""
    patch, tile, stride = info["patch"], info["tile"], info["tile_stride"]
    scale = info["resolution"] / max(image.shape[-2:])
    minimum = patch if stride == 0 else tile
    hw = tuple(max(minimum, int(round(side * scale / patch)) * patch) for side in image.shape[-2:])
    mean, std = (np.asarray(info[k], dtype=np.float32)[:, None, None] for k in ("mean", "std"))
    canvas = (resize_channels(image[0], hw) - mean) / std
    offsets = [(0, 0)] if stride == 0 else [(r, c) for r in starts(hw[0], tile, stride) for c in starts(hw[1], tile, stride)]
    size = hw if stride == 0 else (tile, tile)
    crops = np.stack([canvas[:, r:r + size[0], c:c + size[1]] for r, c in offsets]).astype(np.float32)
    tokens = session.run([info["output"]], {info["input"]: crops})[0]  # (T, 1 + h*w, C), CLS first
    grid = (size[0] // patch, size[1] // patch)
    maps = tokens[:, 1:].transpose(0, 2, 1).reshape(len(offsets), tokens.shape[-1], *grid)
    total = np.zeros((tokens.shape[-1], hw[0] // patch, hw[1] // patch), dtype=np.float32)
    count = np.zeros((1, *total.shape[1:]), dtype=np.float32)
    for m, (r, c) in zip(maps, offsets):
        total[:, r // patch:r // patch + grid[0], c // patch:c // patch + grid[1]] += m
        count[:, r // patch:r // patch + grid[0], c // patch:c // patch + grid[1]] += 1
    return (total / count)[None]


def encode(sessions: dict, manifest: dict, image: np.ndarray) -> dict[str, np.ndarray]:
    """(1,3,h,w) -> the encoder's features (DINOv2 models: its patch map computed first, see `semantic_map`)."""
    feeds = {"image": image}
    if "semantic" in manifest:
        feeds["semantic"] = semantic_map(sessions["dinov2"], manifest["semantic"], image)
    return run(sessions["encoder"], feeds)


def read_mask(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file -> HxW bool (non-zero = object), resized (nearest) to size (W, H) if given."""
    mask = Image.open(path).convert("L")
    if size is not None and mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    return np.asarray(mask) > 0


def cover(region: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """HxW bool -> (1,1,h,w) share of each grid cell inside the region (adaptive average pooling)."""
    big_h, big_w = region.shape
    total = np.pad(region.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys = [(i * big_h // grid[0], -(-(i + 1) * big_h // grid[0])) for i in range(grid[0])]
    xs = [(j * big_w // grid[1], -(-(j + 1) * big_w // grid[1])) for j in range(grid[1])]
    out = np.array([[(total[y1, x1] - total[y0, x1] - total[y1, x0] + total[y0, x0]) / ((y1 - y0) * (x1 - x0))
                     for x0, x1 in xs] for y0, y1 in ys], dtype=np.float32)
    return out[None, None]


def run(session: ort.InferenceSession, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed the inputs the graph reads (unused ones are dropped at export) -> {output name: array}."""
    feeds = {i.name: tensors[i.name] for i in session.get_inputs()}  # only what this graph reads
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def upsample(scores: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(C,h,w) -> (C,H,W) bilinear, align_corners=False (as the PyTorch path)."""
    def taps(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        return low, np.minimum(low + 1, n_in - 1), (src - low).astype(np.float32)

    y0, y1, fy = taps(scores.shape[1], hw[0])
    x0, x1, fx = taps(scores.shape[2], hw[1])
    rows = scores[:, y0] + (scores[:, y1] - scores[:, y0]) * fy[None, :, None]
    return rows[:, :, x0] + (rows[:, :, x1] - rows[:, :, x0]) * fx


def segment(folder: Path, support: str, support_mask: str, query: str, threshold: float | None = None) -> np.ndarray:
    """One-shot: the query's HxW foreground probability from one support photo and its mask."""
    manifest, sessions = load(folder)
    image = Image.open(support)
    hw = input_hw(image.height, image.width, manifest)
    features = encode(sessions, manifest, image_array(image, hw))
    grid = next(iter(features.values())).shape[-2:]
    mask = read_mask(support_mask, (hw[1], hw[0]))  # the mask at the network input size
    prototypes = run(sessions["prototype"], {**features, "foreground_cover": cover(mask, grid),
                                             "background_cover": cover(~mask, grid),
                                             "mask": mask[None, None].astype(np.float32)})  # published SG-One
    photo = Image.open(query)
    features = encode(sessions, manifest, image_array(photo, input_hw(photo.height, photo.width, manifest)))
    logits = run(sessions["head"], {**features, **prototypes})["logits"][0]
    logits = upsample(logits, (photo.height, photo.width))
    return 1.0 / (1.0 + np.exp(logits[0] - logits[1]))  # softmax over (background, object)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="folder written by `sgone export`")
    parser.add_argument("--support", required=True)
    parser.add_argument("--support-mask", required=True)
    parser.add_argument("--input", "--query", dest="query", required=True, help="the query photo (--query: its old name)")
    parser.add_argument("--output", required=True, help="mask PNG to write (0/255)")
    parser.add_argument("--truth", help="the query's true mask: print the IoU against it")
    parser.add_argument("--threshold", type=float, default=None, help="default: the manifest's (0.5)")
    args = parser.parse_args(argv)
    for path in (args.model / "manifest.json", args.support, args.support_mask, args.query, args.truth):
        if path is not None and not Path(path).is_file():
            print(f"onnx_segment: error: {path}: not found", file=sys.stderr)
            return 2
    probability = segment(args.model, args.support, args.support_mask, args.query)
    threshold = args.threshold if args.threshold is not None else json.loads(
        (args.model / "manifest.json").read_text(encoding="utf-8"))["threshold"]
    mask = probability > threshold
    tmp = Path(args.output).with_name(f".{Path(args.output).name}.tmp")
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, args.output)  # atomic: a reader never sees half a file
    line = f"wrote {args.output}: foreground {mask.mean():.1%}"
    if args.truth:
        truth = read_mask(args.truth, (mask.shape[1], mask.shape[0]))
        line += f", IoU against {args.truth} {(mask & truth).sum() / max((mask | truth).sum(), 1):.3f}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
