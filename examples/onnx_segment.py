"""Segment a photo with a model from `sgone export`, using only onnxruntime, numpy and pillow.

    sgone export --output onnx-model/                  (the default model; --model NAME for another)
    python examples/onnx_segment.py onnx-model/ --support cat.jpg --support-mask cat_mask.png \\
        --input photo.jpg --output photo_mask.png [--truth photo_truth.png]

No torch and no sgone import: this file is what a deployment needs besides the exported folder.
It gives `sgone segment`'s masks (tests/examples/test_onnx_segment.py; figures in docs/results.md):
the graphs hold the network, and this file follows the manifest for the rest (sizes, the image
resize to the bit, DINOv2's tiles, mask covers, k-shot averaging, threshold). Repeat
--support/--support-mask for k-shot. Masks: 0/1 or 0/255, palette or class-id PNGs (every non-zero
id is the object, 255 is ignore), other greys >= 128, colour masks: non-black. Writes a 0/255 mask
of the query's size; --truth prints the IoU against it (255 in the truth is ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def load(folder: Path) -> tuple[dict, dict[str, ort.InferenceSession]]:
    """manifest.json and one session per graph (all optimisations; OMP_NUM_THREADS threads if set)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if "image_resize" not in manifest:
        raise SystemExit(f"onnx_segment: error: {folder}: written by an older sgone export; export it again")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0"))  # 0: ORT's default, the cores
    sessions = {g: ort.InferenceSession(str(folder / f), options, providers=["CPUExecutionProvider"])
                for g, f in manifest["files"].items()}
    return manifest, sessions


def read_image(path: str) -> np.ndarray:
    """An image file -> HxWx3 uint8 RGB, upright (EXIF orientation), transparent pixels on white (as sgone)."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB"))


def read_mask(path: str) -> np.ndarray:
    """A mask file -> HxW uint8, 0 background, 1 object, 255 ignore (sgone's rule for 8-bit masks)."""
    with Image.open(path) as opened:
        image, lossy = ImageOps.exif_transpose(opened), opened.format in ("JPEG", "MPO", "WEBP")
    if image.mode in ("RGB", "RGBA"):  # colour: any non-black pixel (JPEG smears black up to 48), opaque
        keep = np.asarray(image.convert("RGB")).max(axis=2) > (48 if lossy else 0)
        if image.mode == "RGBA":
            keep &= np.asarray(image.getchannel("A")) >= 128
        return keep.astype(np.uint8)
    values = np.asarray(image if image.mode == "P" else image.convert("L"), dtype=np.uint8)
    unique = set(np.unique(values).tolist())
    if image.mode != "P" and unique <= {0, 1}:
        return values.copy()
    if image.mode != "P" and unique <= {0, 255}:
        return (values == 255).astype(np.uint8)
    if image.mode == "P" or max(unique - {255}) < 128:  # class ids (palette indices), 255 = ignore
        return np.where(values == 255, 255, values > 0).astype(np.uint8)
    return (values >= 128).astype(np.uint8)


def input_hw(height: int, width: int, manifest: dict) -> tuple[int, int]:
    """The network input size (the manifest's "input" "resize" rule)."""
    size = manifest["input"]["size"]
    if not manifest["input"]["dynamic"]:
        return size, size
    scale = size / max(height, width)
    return max(8, round(height * scale)), max(8, round(width * scale))


def resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """First source index (n_out,) and weights (n_out, K) of one axis: the manifest's "image_resize" steps."""
    f32, f64 = np.float32, np.float64
    scale = f32(n_in) / f32(n_out)
    support = max(scale, f32(1.0))
    invscale = f32(1.0 / f64(scale)) if scale >= 1 else f32(1.0)
    centre = (f64(scale) * (np.arange(n_out) + 0.5)).astype(f32)
    low = np.maximum(((centre - support).astype(f64) + 0.5).astype(np.int64), 0)
    high = np.minimum(((centre + support).astype(f64) + 0.5).astype(np.int64), n_in)
    j = low[:, None] + np.arange(int((high - low).max()))
    x = np.abs((((j.astype(f32) - centre[:, None]).astype(f64) + 0.5) * invscale).astype(f32))
    w = np.where((x < 1) & (j < high[:, None]), f32(1) - x, f32(0))
    total = np.zeros(n_out, f32)
    for column in w.T:  # summed in order, in float32
        total += column
    return low, w / total[:, None]


def resize(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(..., H, W) float32 -> (..., h, w), antialiased bilinear, the same bits as sgone (the manifest's
    "image_resize"; DINOv2 in int8 turns a 1-ulp difference in its input into other features)."""
    for axis, n_out in ((-2, hw[0]), (-1, hw[1])):
        n_in = x.shape[axis]
        if n_in == n_out:
            continue
        low, w = resize_taps(n_in, n_out)
        weights = w.astype(np.float64).T.reshape(w.shape[1], -1, *[1] * (-1 - axis))
        shape = list(x.shape)
        shape[axis] = n_out
        out, part = np.zeros(shape), np.empty(shape)
        for k in range(w.shape[1]):  # the taps in order, float64 products and sums, rounded once
            np.multiply(np.take(x, np.minimum(low + k, n_in - 1), axis=axis), weights[k], out=part)
            out += part
        x = out.astype(np.float32)
    return x


def nearest(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """HxW labels -> hxw by torch's nearest rule (the manifest's "mask")."""
    def index(n_in: int, n_out: int) -> np.ndarray:
        if n_in == n_out:
            return np.arange(n_out)
        step = np.float32(n_in) / np.float32(n_out)
        return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * step).astype(np.int64), n_in - 1)

    return mask[index(mask.shape[0], hw[0])][:, index(mask.shape[1], hw[1])]


def starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one side, `stride` apart, the last flush with the end."""
    return [0] if length <= tile else list(range(0, length - tile, stride)) + [length - tile]


def semantic_map(sessions: dict, info: dict, image: np.ndarray) -> np.ndarray:
    """(1,3,h,w) encoder input -> DINOv2's stitched patch map (1,384,H/14,W/14): the manifest's "semantic" steps."""
    patch, tile, stride = info["patch"], info["tile"], info["tile_stride"]
    scale = info["resolution"] / max(image.shape[-2:])
    minimum = patch if stride == 0 else tile
    hw = tuple(max(minimum, int(round(side * scale / patch)) * patch) for side in image.shape[-2:])
    mean, std = (np.asarray(info[k], dtype=np.float32)[:, None, None] for k in ("mean", "std"))
    canvas = resize((image - mean) / std, hw)[0]
    offsets = [(0, 0)] if stride == 0 else [(r, c) for r in starts(hw[0], tile, stride) for c in starts(hw[1], tile, stride)]
    size = hw if stride == 0 else (tile, tile)
    crops = np.stack([canvas[:, r:r + size[0], c:c + size[1]] for r, c in offsets])
    batch = info.get("batch", len(crops))  # the same runs as sgone: the int8 file scales each run as a whole
    tokens = np.concatenate([sessions["dinov2"].run([info["output"]], {info["input"]: crops[i:i + batch]})[0]
                             for i in range(0, len(crops), batch)])  # (T, 1 + h*w, C), CLS first
    grid = (size[0] // patch, size[1] // patch)
    maps = tokens[:, 1:].transpose(0, 2, 1).reshape(len(offsets), tokens.shape[-1], *grid)
    total = np.zeros((tokens.shape[-1], hw[0] // patch, hw[1] // patch), dtype=np.float32)
    count = np.zeros((1, *total.shape[1:]), dtype=np.float32)
    for m, (r, c) in zip(maps, offsets):
        total[:, r // patch:r // patch + grid[0], c // patch:c // patch + grid[1]] += m
        count[:, r // patch:r // patch + grid[0], c // patch:c // patch + grid[1]] += 1
    return (total / count)[None]


def encode(sessions: dict, manifest: dict, image: np.ndarray, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """HxWx3 uint8 -> the encoder's features at input size hw (DINOv2 models: its patch map first)."""
    x = np.ascontiguousarray(resize(image.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255), hw))
    feeds = {"image": x}
    if "semantic" in manifest:
        feeds["semantic"] = semantic_map(sessions, manifest["semantic"], x)
    return run(sessions["encoder"], feeds)


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


def prototype(sessions: dict, manifest: dict, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """One support photo (HxWx3 uint8) and its HxW mask (0/1/255) -> its prototypes (the manifest's "covers")."""
    hw = input_hw(*image.shape[:2], manifest)
    features = encode(sessions, manifest, image, hw)
    grid = features[manifest["spec"]["support_features"][0]].shape[-2:]
    mask = nearest(mask, hw)  # the mask at the network input size
    return run(sessions["prototype"], {**features, "foreground_cover": cover(mask == 1, grid),
                                       "background_cover": cover(mask == 0, grid),
                                       "mask": (mask > 0)[None, None].astype(np.float32)})  # published SG-One


def average(prototypes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """k shots -> one (the manifest's "k_shot"): vectors averaged, *_set parts concatenated."""
    return {k: np.concatenate([p[k] for p in prototypes], axis=1) if k.endswith("_set")
            else np.mean(np.stack([p[k] for p in prototypes]), axis=0) for k in prototypes[0]}


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


def probability(sessions: dict, manifest: dict, prototypes: dict[str, np.ndarray], query: np.ndarray) -> np.ndarray:
    """A query (HxWx3 uint8) against a support's prototypes -> its HxW foreground probability."""
    features = encode(sessions, manifest, query, input_hw(*query.shape[:2], manifest))
    logits = upsample(run(sessions["head"], {**features, **prototypes})["logits"][0], query.shape[:2])
    return 1.0 / (1.0 + np.exp(logits[0] - logits[1]))  # softmax over (background, object)


def segment(folder: Path, supports: list[str], masks: list[str], query: str) -> np.ndarray:
    """k-shot: the query's HxW foreground probability from k support photos and their masks (files)."""
    manifest, sessions = load(folder)
    shots = []
    for image_path, mask_path in zip(supports, masks):
        image, mask = read_image(image_path), read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise SystemExit(f"onnx_segment: error: {mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs "
                             f"from image size {image.shape[1]}x{image.shape[0]}")
        shots.append(prototype(sessions, manifest, image, mask))
    return probability(sessions, manifest, average(shots), read_image(query))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="folder written by `sgone export`")
    parser.add_argument("--support", required=True, action="append", help="support photo (repeat for k-shot)")
    parser.add_argument("--support-mask", required=True, action="append", help="its mask (one per --support)")
    parser.add_argument("--input", "--query", dest="query", required=True, help="the query photo (--query: its old name)")
    parser.add_argument("--output", required=True, help="mask PNG to write (0/255)")
    parser.add_argument("--truth", help="the query's true mask: print the IoU against it")
    parser.add_argument("--threshold", type=float, default=None, help="default: the manifest's (0.5)")
    args = parser.parse_args(argv)
    if len(args.support) != len(args.support_mask):
        parser.error("give one --support-mask per --support")
    for path in (args.model / "manifest.json", *args.support, *args.support_mask, args.query, args.truth):
        if path is not None and not Path(path).is_file():
            print(f"onnx_segment: error: {path}: not found", file=sys.stderr)
            return 2
    score = segment(args.model, args.support, args.support_mask, args.query)
    threshold = args.threshold if args.threshold is not None else json.loads(
        (args.model / "manifest.json").read_text(encoding="utf-8"))["threshold"]
    mask = score > threshold
    tmp = Path(args.output).with_name(f".{Path(args.output).name}.tmp")
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, args.output)  # atomic: a reader never sees half a file
    line = f"wrote {args.output}: foreground {mask.mean():.1%}"
    if args.truth:
        truth = read_mask(args.truth)
        if truth.shape != mask.shape:
            truth = nearest(truth, mask.shape)
        valid = truth != 255
        line += (f", IoU against {args.truth} "
                 f"{(mask & (truth == 1)).sum() / max(((mask | (truth == 1)) & valid).sum(), 1):.3f}")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
