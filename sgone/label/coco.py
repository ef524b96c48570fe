"""Per-image masks -> a COCO instances dict (RLE segmentations), for `sgone label`, the app and
`Predictor` users.

    from sgone.label.coco import CocoBuilder, write_coco
    predictor.set_support([[cat1], [dog1]], [[m1], [m2]], class_names=["cat", "dog"])
    coco = CocoBuilder(predictor.class_names)
    for path in ["a.jpg", "b.jpg"]:
        coco.add_prediction(path, predictor.predict(path))  # one annotation per class present
    write_coco("annotations.json", coco.to_dict())           # pycocotools.coco.COCO loads it

Masks are encoded with pycocotools' own RLE (`pycocotools.mask.encode`), so every COCO tool reads
them; `area` and `bbox` come from the same library ([x, y, width, height], pixels).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sgone.errors import SgoneError


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError:  # a core dependency; an environment without it gets one line
        raise SgoneError("pycocotools: not installed; pip install pycocotools (a dependency of sgone)") from None
    return mask_api


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """HxW object mask (bool, or any integer array: non-zero = object, so 0/1 and 0/255 both work) -> COCO RLE.

    -> {"segmentation": {"size": [H, W], "counts": str}, "area": int, "bbox": [x, y, w, h]}.
    """
    mask_api = _mask_api()
    rle = mask_api.encode(np.asfortranarray(np.asarray(mask) != 0, dtype=np.uint8))
    return {"segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(mask_api.area(rle)), "bbox": [float(v) for v in mask_api.toBbox(rle)]}


class CocoBuilder:
    """Collects images and their per-class masks; `to_dict()` is a COCO instances dict.

    categories: class names, ids 1..N in that order. Image ids are 1, 2, ... in the order added;
    one annotation per image and class whose mask is not empty.
    """

    def __init__(self, categories: Sequence[str], description: str = "sgone") -> None:
        if not categories:
            raise SgoneError("COCO export: no class names")
        self.categories = list(categories)
        self.description = description
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add_image(self, file_name: str, width: int, height: int) -> int:
        """Register one image; -> its id."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": str(file_name), "width": int(width), "height": int(height)})
        return image_id

    def add_encoded(self, image_id: int, category: int, encoded: dict[str, Any]) -> None:
        """An `encode_mask` result for category `category` (1..N); empty masks are dropped."""
        if not 1 <= category <= len(self.categories):
            raise SgoneError(f"COCO export: category {category} outside 1..{len(self.categories)}")
        if encoded["area"] <= 0:
            return
        self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, "category_id": category,
                                 "iscrowd": 0, **encoded})

    def add_masks(self, file_name: str, masks: Sequence[np.ndarray]) -> int:
        """One image given by its per-class masks (N HxW arrays, non-zero = object); -> its id."""
        if len(masks) != len(self.categories):
            raise SgoneError(f"{file_name}: {len(masks)} masks for {len(self.categories)} classes")
        height, width = np.asarray(masks[0]).shape[:2]
        image_id = self.add_image(file_name, width, height)
        for c, mask in enumerate(masks, 1):
            self.add_encoded(image_id, c, encode_mask(mask))
        return image_id

    def add_labels(self, file_name: str, labels: np.ndarray) -> int:
        """One image given by a label map (HxW: 0 = background, c = class c, 255 = ignore); -> its id."""
        labels = np.asarray(labels)
        return self.add_masks(file_name, [labels == c for c in range(1, len(self.categories) + 1)])

    def add_prediction(self, file_name: str, prediction) -> int:
        """A `sgone.predictor.Prediction` (its `mask`: 1-way {0,1}, N-way labels 0..N); -> its id."""
        return self.add_labels(file_name, prediction.mask)

    def to_dict(self) -> dict[str, Any]:
        return {"info": {"description": self.description},
                "images": self.images, "annotations": self.annotations,
                "categories": [{"id": i, "name": name, "supercategory": "object"}
                               for i, name in enumerate(self.categories, 1)]}


def write_coco(path: str | Path, coco: dict[str, Any]) -> None:
    """Write a COCO dict as JSON, atomically (never half written)."""
    from sgone.io import atomic_write

    try:
        atomic_write(path, json.dumps(coco, separators=(",", ":")) + "\n")
    except OSError as exc:
        raise SgoneError(f"{path}: cannot write ({exc.strerror or exc})") from None


def coco_from_mask_files(files: Sequence[tuple[str, str | Path]], categories: Sequence[str] = ("object",)) -> dict:
    """(file_name, 0/255 mask PNG) pairs -> a COCO dict, one category (1-way masks)."""
    from sgone.io import read_label

    coco = CocoBuilder(categories)
    for name, path in files:
        coco.add_masks(name, [read_label(path) != 0])
    return coco.to_dict()
