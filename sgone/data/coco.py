"""COCO-20i: COCO 2014 instances, 80 classes in four folds of twenty.

Layout under `root`:
    train2014/*.jpg, val2014/*.jpg
    annotations/instances_train2014.json, annotations/instances_val2014.json
Class ids 1..80 index COCO's category ids in increasing order. Fold f tests classes
{4k + f + 1} (split_style="interleaved", the common one) or 20f+1..20f+20 ("contiguous").
A class mask merges the class's instance polygons and RLEs; crowd regions of the class are 255.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from sgone.data.episode import IGNORE, SPLITS, Source, cached_json, check_same_size
from sgone.data.pascal import summarise
from sgone.errors import SgoneError
from sgone.io import read_image

SPLIT_DIRS = {"train": "train2014", "val": "val2014"}
SPLIT_STYLES = ("interleaved", "contiguous")


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed RLE or compressed RLE -> HxW uint8 {0, 1}."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowd regions)
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
    with warnings.catch_warnings():
        # pycocotools built for numpy 1 warns about numpy 2's copy keyword on every decode
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(np.uint8)


def _build_lists(ann_files: dict[str, Path]) -> dict:
    """Scan the annotation files: categories, and per split and class [image key, object pixels]."""
    categories: list[list] | None = None
    lists: dict[str, dict[str, list]] = {}
    sizes: dict[str, dict[str, list[int]]] = {}
    for split, path in ann_files.items():
        data = json.loads(path.read_text())
        cats = sorted([c["id"], c["name"]] for c in data["categories"])
        if categories is None:
            categories = cats
        index = {coco_id: i + 1 for i, (coco_id, _) in enumerate(cats)}
        files = {img["id"]: img for img in data["images"]}
        area: dict[tuple[int, int], float] = {}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                continue  # a crowd region alone does not make the image an example of the class
            k = (index[ann["category_id"]], ann["image_id"])
            area[k] = area.get(k, 0.0) + float(ann.get("area", 0.0))
        per_class: dict[str, list] = {}
        for (cls, image_id), pixels in sorted(area.items()):
            key = f"{SPLIT_DIRS[split]}/{files[image_id]['file_name']}"
            per_class.setdefault(str(cls), []).append([key, round(pixels)])
        lists[split] = per_class
        sizes[split] = {f"{SPLIT_DIRS[split]}/{img['file_name']}": [img["height"], img["width"]]
                        for img in data["images"]}
    return {"categories": categories or [], "lists": lists, "sizes": sizes}


class CocoSource(Source):
    """COCO-20i over a COCO 2014 folder (see the module docstring for the layout).

    Keys are "<split dir>/<file name>". drop_small (off by default, as in HSNet's lists) drops
    (image, class) pairs whose non-crowd instances cover fewer than `min_pixels` pixels.
    Class lists are cached as JSON; annotations are parsed again only when an image is loaded.
    """

    name = "coco"
    folds = 4

    def __init__(self, root: str | Path, split_style: str = "interleaved", drop_small: bool = False,
                 min_pixels: int = 2 * 32 * 32, cache_dir: str | Path | None = None, strict: bool = True) -> None:
        self.root = Path(root)
        if split_style not in SPLIT_STYLES:
            raise SgoneError(f"unknown COCO split style '{split_style}' (expected one of {', '.join(SPLIT_STYLES)})")
        self.split_style, self.drop_small, self.min_pixels = split_style, drop_small, int(min_pixels)
        self.problems, self.notes = [], []
        self.class_names: dict[int, str] = {}
        self.coco_ids: dict[int, int] = {}
        self.cache_path: Path | None = None
        self._items: dict[str, dict[int, list[str]]] = {s: {} for s in SPLITS}
        self._sizes: dict[str, list[int]] = {}
        self._index_cache: dict[str, dict] = {}  # per split, built on first load in each process
        self.ann_files = {s: self.root / "annotations" / f"instances_{d}.json" for s, d in SPLIT_DIRS.items()}
        if self._check_layout():
            self._index(cache_dir)
        self.finish_init(strict)

    def _check_layout(self) -> bool:
        if not self.root.is_dir():
            self.problems.append(f"{self.root}: folder not found")
            return False
        for split, folder in SPLIT_DIRS.items():
            if not (self.root / folder).is_dir():
                self.problems.append(f"{self.root / folder}: folder not found")
            if not self.ann_files[split].is_file():
                self.problems.append(f"{self.ann_files[split]}: annotation file not found")
        return not self.problems

    def _index(self, cache_dir: str | Path | None) -> None:
        settings = {"annotations": {s: [p.stat().st_size, p.stat().st_mtime_ns] for s, p in self.ann_files.items()}}
        try:
            data, self.cache_path = cached_json("coco", settings, lambda: _build_lists(self.ann_files),
                                                self.root, cache_dir)
        except (ValueError, KeyError, TypeError) as exc:
            self.problems.append(f"{self.root / 'annotations'}: cannot read COCO annotations ({exc.__class__.__name__}: {exc})")
            return
        for i, (coco_id, name) in enumerate(data["categories"]):
            self.class_names[i + 1] = name
            self.coco_ids[i + 1] = coco_id
        if len(self.class_names) % self.folds:
            self.problems.append(f"{self.ann_files['train']}: {len(self.class_names)} categories do not split "
                                 f"into {self.folds} folds")
        self._sizes = {k: v for split in data["sizes"].values() for k, v in split.items()}
        threshold = self.min_pixels if self.drop_small else 0
        for split, folder in SPLIT_DIRS.items():
            on_disk = {p.name for p in (self.root / folder).glob("*.jpg")}
            missing = set()
            for cls in self.class_names:
                keep = []
                for key, pixels in data["lists"].get(split, {}).get(str(cls), []):
                    if key.split("/", 1)[1] not in on_disk:
                        missing.add(key)
                    elif pixels >= threshold:
                        keep.append(key)
                self._items[split][cls] = keep
            self.problems += summarise([f"{self.root / key}: image (annotated in {self.ann_files[split].name}) not found"
                                        for key in sorted(missing)], "missing images", self.root / folder)

    def check(self, shots: int = 1) -> list[str]:
        """Also compares each listed image's real size with the annotation's (reads every header)."""
        problems = list(self.problems)
        listed = sorted({k for split in self._items.values() for keys in split.values() for k in keys})
        mismatched = []
        for key in listed:
            try:
                with Image.open(self.root / key) as im:
                    width, height = im.size
            except OSError as exc:
                mismatched.append(f"{self.root / key}: cannot read image ({exc})")
                continue
            h, w = self._sizes.get(key, (height, width))
            if (h, w) != (height, width):
                mismatched.append(f"{self.root / key}: image is {width}x{height} but its annotation says {w}x{h}")
        return problems + summarise(mismatched, "images of the wrong size", self.root) + self.count_problems(shots)

    # -- Source --------------------------------------------------------------------------------

    def classes(self, fold: int, role: str) -> list[int]:
        self.check_fold(fold, role)
        per_fold = len(self.class_names) // self.folds
        if self.split_style == "interleaved":
            test = [self.folds * k + fold + 1 for k in range(per_fold)]
        else:
            test = list(range(per_fold * fold + 1, per_fold * (fold + 1) + 1))
        return test if role == "test" else [c for c in sorted(self.class_names) if c not in test]

    def items(self, split: str, class_id: int) -> list[str]:
        self.check_split(split)
        return list(self._items[split].get(class_id, []))

    def _split_index(self, split: str) -> dict:
        """{file name: (height, width, [annotations])} for one split, parsed once per process."""
        if split not in self._index_cache:
            data = json.loads(self.ann_files[split].read_text())
            index = {img["id"]: (img["file_name"], img["height"], img["width"], []) for img in data["images"]}
            for ann in data["annotations"]:
                index[ann["image_id"]][3].append(ann)
            self._index_cache[split] = {name: (h, w, anns) for name, h, w, anns in index.values()}
        return self._index_cache[split]

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(self.root / key)
        mask = self.load_mask(key, class_id)
        check_same_size(image.shape, mask.shape, self.ann_files[self._split_of(key)])
        return image, mask

    def _split_of(self, key: str) -> str:
        folder = key.split("/", 1)[0]
        for split, name in SPLIT_DIRS.items():
            if name == folder:
                return split
        raise SgoneError(f"{self.root / key}: not an image of {', '.join(SPLIT_DIRS.values())}")

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        split = self._split_of(key)
        entry = self._split_index(split).get(key.split("/", 1)[1])
        if entry is None:
            raise SgoneError(f"{self.ann_files[split]}: no annotations for image '{key}'")
        height, width, anns = entry
        coco_id = self.coco_ids[class_id]
        obj = np.zeros((height, width), dtype=bool)
        crowd = np.zeros((height, width), dtype=bool)
        for ann in anns:
            if ann["category_id"] == coco_id:
                target = crowd if ann.get("iscrowd", 0) else obj
                target |= decode_segmentation(ann["segmentation"], height, width).astype(bool)
        mask = obj.astype(np.uint8)
        mask[crowd & ~obj] = IGNORE  # crowd pixels of the class are neither object nor background
        return mask
