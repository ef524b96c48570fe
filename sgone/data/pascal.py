"""PASCAL-5i: VOC2012 images with SBD-augmented class-id masks, four folds of five classes.

Layout under `root` (a VOC2012 folder):
    JPEGImages/<stem>.jpg
    SegmentationClassAug/<stem>.png     class id per pixel, 255 = boundary (use_sbd=True)
    SegmentationClass/<stem>.png        VOC palette PNGs (use_sbd=False)
    ImageSets/Segmentation/val.txt      test queries and supports (split "val")
    ImageSets/Segmentation/train.txt    training images when use_sbd=False
    ImageSets/SegmentationAug/train_aug.txt   optional SBD training list; without it every
                                        SegmentationClassAug stem that is not in val.txt is used
Training images never include a val image. Fold f tests classes 5f+1..5f+5.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from sgone.data.episode import IGNORE, SPLITS, Source, binary_from_labels, cached_json, check_same_size
from sgone.errors import SgoneError
from sgone.io import read_image, read_label

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
MAX_LISTED = 5  # a missing folder would otherwise give thousands of lines: list a few, count the rest


def read_list(path: Path) -> list[str]:
    """Image stems of a VOC list file; DeepLab-style lines ("/JPEGImages/x.jpg /Seg.../x.png") work too."""
    stems = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            stems.append(Path(line.split()[0]).stem)
    return stems


def summarise(problems: list[str], what: str, folder: Path) -> list[str]:
    """Keep the first MAX_LISTED problems and count the rest in one line."""
    if len(problems) <= MAX_LISTED:
        return problems
    return problems[:MAX_LISTED] + [f"{folder}: ... and {len(problems) - MAX_LISTED} more {what}"]


def stems_digest(stems: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted(stems)).encode()).hexdigest()


def scan_label_maps(pairs: list[tuple[str, Path, Path]], num_classes: int, desc: str) -> dict:
    """Read every label map once: pixels per class id (1..num_classes) per stem, and problems.

    `pairs` holds (stem, image path, mask path). Returns {"counts": {stem: {class: pixels}},
    "problems": [...]}; a stem with a problem (unreadable, size mismatch) gets no counts.
    """
    counts: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for stem, image_path, mask_path in tqdm(pairs, desc=desc, unit="mask", disable=None):
        try:
            labels = read_label(mask_path)
        except SgoneError as exc:
            problems.append(str(exc))
            continue
        try:
            with Image.open(image_path) as im:  # the header is enough for the size
                width, height = im.size
        except OSError as exc:
            problems.append(f"{image_path}: cannot read image ({exc})")
            continue
        if (height, width) != labels.shape:
            problems.append(f"{mask_path}: mask is {labels.shape[1]}x{labels.shape[0]} but its image is "
                            f"{width}x{height} (width x height)")
            continue
        hist = np.bincount(labels.ravel(), minlength=256)
        unexpected = [v for v in np.flatnonzero(hist) if num_classes < v < IGNORE]
        if unexpected:
            problems.append(f"{mask_path}: label values {[int(v) for v in unexpected]} are not class ids "
                            f"(expected 0..{num_classes} and 255)")
        counts[stem] = {str(c): int(hist[c]) for c in range(1, num_classes + 1) if hist[c]}
    return {"counts": counts, "problems": problems}


class PascalSource(Source):
    """PASCAL-5i over a VOC2012 folder (see the module docstring for the layout).

    drop_small: drop (image, class) pairs whose class covers fewer than `min_pixels` pixels
    (PFENet's rule, applied to both splits); with drop_small=False any pixel counts.
    The per-image class pixel counts are scanned once and cached as JSON (see `cached_json`).
    """

    name = "pascal"
    folds = 4

    def __init__(self, root: str | Path, use_sbd: bool = True, drop_small: bool = True,
                 min_pixels: int = 2 * 32 * 32, cache_dir: str | Path | None = None, strict: bool = True) -> None:
        self.root = Path(root)
        self.use_sbd, self.drop_small, self.min_pixels = use_sbd, drop_small, int(min_pixels)
        self.class_names = {i + 1: n for i, n in enumerate(VOC_CLASSES)}
        self.image_dir = self.root / "JPEGImages"
        self.mask_dir = self.root / ("SegmentationClassAug" if use_sbd else "SegmentationClass")
        self.problems, self.notes = [], []
        self.cache_path: Path | None = None
        self._items: dict[str, dict[int, list[str]]] = {s: {c: [] for c in self.class_names} for s in SPLITS}
        lists = self._read_lists()
        if lists is not None:
            self._index(lists, cache_dir)
        self.finish_init(strict)

    # -- layout ------------------------------------------------------------------------------

    def _read_lists(self) -> dict[str, list[str]] | None:
        root = self.root
        if not root.is_dir():
            self.problems.append(f"{root}: folder not found")
            return None
        for folder in (self.image_dir, self.mask_dir):
            if not folder.is_dir():
                hint = " (or pass use_sbd=False to use SegmentationClass)" if folder.name.endswith("Aug") else ""
                self.problems.append(f"{folder}: folder not found{hint}")
        val_file = root / "ImageSets" / "Segmentation" / "val.txt"
        if not val_file.is_file():
            self.problems.append(f"{val_file}: list not found")
        if self.problems:
            return None
        val = read_list(val_file)
        val_set = set(val)
        if self.use_sbd:
            aug_file = root / "ImageSets" / "SegmentationAug" / "train_aug.txt"
            if aug_file.is_file():
                train = read_list(aug_file)
                self.train_list = aug_file
            else:
                train = sorted(p.stem for p in self.mask_dir.glob("*.png"))
                self.train_list = self.mask_dir
        else:
            train_file = root / "ImageSets" / "Segmentation" / "train.txt"
            if not train_file.is_file():
                self.problems.append(f"{train_file}: list not found")
                return None
            train = read_list(train_file)
            self.train_list = train_file
        # VOC val images are the test queries: never train on them
        train = sorted(set(train) - val_set)
        self.val_list = val_file
        return {"train": train, "val": sorted(val_set)}

    def _index(self, lists: dict[str, list[str]], cache_dir: str | Path | None) -> None:
        images = {p.stem for p in self.image_dir.glob("*.jpg")}
        masks = {p.stem for p in self.mask_dir.glob("*.png")}
        present: dict[str, list[str]] = {}
        for split, stems in lists.items():
            listed_in = self.train_list if split == "train" else self.val_list
            missing_images = [f"{self.image_dir / (s + '.jpg')}: image of '{s}' (listed in {listed_in}) not found"
                              for s in stems if s not in images]
            missing_masks = [f"{self.mask_dir / (s + '.png')}: mask of '{s}' (listed in {listed_in}) not found"
                             for s in stems if s not in masks]
            self.problems += summarise(missing_images, "missing images", self.image_dir)
            self.problems += summarise(missing_masks, "missing masks", self.mask_dir)
            present[split] = [s for s in stems if s in images and s in masks]
        all_stems = sorted(present["train"] + present["val"])
        # the root is part of the key because cached problems name absolute paths
        settings = {"root": str(self.root.resolve()), "mask_dir": self.mask_dir.name, "stems": stems_digest(all_stems),
                    "mask_dir_mtime": self.mask_dir.stat().st_mtime_ns, "classes": len(VOC_CLASSES)}
        pairs = [(s, self.image_dir / f"{s}.jpg", self.mask_dir / f"{s}.png") for s in all_stems]
        scan, self.cache_path = cached_json(
            "pascal", settings, lambda: scan_label_maps(pairs, len(VOC_CLASSES), f"scanning {self.mask_dir}"),
            self.root, cache_dir)
        self.problems += summarise(scan["problems"], "broken masks", self.mask_dir)
        threshold = self.min_pixels if self.drop_small else 1
        for split, stems in present.items():
            for stem in stems:
                for cls, pixels in scan["counts"].get(stem, {}).items():
                    if pixels >= threshold:
                        self._items[split][int(cls)].append(stem)

    # -- Source --------------------------------------------------------------------------------

    def classes(self, fold: int, role: str) -> list[int]:
        self.check_fold(fold, role)
        test = list(range(5 * fold + 1, 5 * fold + 6))
        return test if role == "test" else [c for c in self.class_names if c not in test]

    def items(self, split: str, class_id: int) -> list[str]:
        self.check_split(split)
        return list(self._items[split].get(class_id, []))

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(self.image_dir / f"{key}.jpg")
        return image, self._mask(key, class_id, image.shape)

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        return self._mask(key, class_id, None)

    def _mask(self, key: str, class_id: int, shape: tuple | None) -> np.ndarray:
        path = self.mask_dir / f"{key}.png"
        labels = read_label(path)
        if shape is not None:
            check_same_size(shape, labels.shape, path)
        return binary_from_labels(labels, class_id)
