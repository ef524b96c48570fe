"""Tiny generated data trees in every layout the data sources read (images 40x56)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sgone.io import write_label_png

H, W = 40, 56


def random_image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def label_map(objects: list[tuple[int, tuple[int, int, int, int]]], h: int = H, w: int = W) -> np.ndarray:
    """Class-id map with a 255 band one pixel wide around each box (y0, x0, y1, x1), as VOC draws it."""
    labels = np.zeros((h, w), dtype=np.uint8)
    for class_id, (y0, x0, y1, x1) in objects:
        labels[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = 255
        labels[y0:y1, x0:x1] = class_id
    return labels


def save_palette(path: Path, labels: np.ndarray) -> None:
    """A P-mode PNG whose palette indices are the class ids (as VOC ships SegmentationClass)."""
    write_label_png(path, labels)


def save_grey(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(path)


def save_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=90)


BIG = (5, 5, 25, 25)     # 400 pixels
SMALL = (30, 40, 33, 43)  # 9 pixels


def make_voc(root: Path, per_class: int = 3) -> dict[str, list[str]]:
    """VOC2012-like tree: every class 1..20 has `per_class` train and val images with a big object;
    the first image of each class also holds a 9-pixel object of the next class.

    Writes JPEGImages, SegmentationClassAug (grey ids), SegmentationClass (palette) and the
    ImageSets lists; returns {"train": stems, "val": stems}.
    """
    stems: dict[str, list[str]] = {"train": [], "val": []}
    seed = 0
    for split, prefix in (("train", "t"), ("val", "v")):
        for c in range(1, 21):
            for i in range(per_class):
                stem = f"2010_{prefix}{c:02d}{i}"
                objects = [(c, BIG)]
                if i == 0:
                    objects.append((c % 20 + 1, SMALL))
                labels = label_map(objects)
                seed += 1
                save_jpg(root / "JPEGImages" / f"{stem}.jpg", random_image(seed))
                save_grey(root / "SegmentationClassAug" / f"{stem}.png", labels)
                save_palette(root / "SegmentationClass" / f"{stem}.png", labels)
                stems[split].append(stem)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(stems["train"]) + "\n")
    (sets / "val.txt").write_text("\n".join(stems["val"]) + "\n")
    return stems


@pytest.fixture(scope="session")
def voc_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    make_voc(root)
    return root


@pytest.fixture
def voc_root(voc_template, tmp_path) -> Path:
    """A fresh copy of the VOC tree (tests may break it or write caches into it)."""
    import shutil

    root = tmp_path / "VOC2012"
    shutil.copytree(voc_template, root, ignore=shutil.ignore_patterns(".sgone-cache"))
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Keep the user-cache fallback inside the test's folder."""
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("SGONE_CACHE_DIR", str(folder))
    return folder


# ---------------------------------------------------------------------------------------------
# COCO

COCO_CATEGORIES = [(1, "person"), (2, "bicycle"), (3, "car"), (5, "airplane"), (7, "train"), (8, "truck"),
                   (10, "traffic light"), (11, "fire hydrant")]


def box_polygon(y0: int, x0: int, y1: int, x1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def make_coco(root: Path, per_class: int = 3) -> None:
    """COCO 2014 tree with 8 categories (ids not contiguous): polygons for objects, uncompressed
    RLE crowds on the first image of each class, compressed RLE for a second class's object."""
    from pycocotools import mask as mask_utils

    for split in ("train", "val"):
        folder = root / f"{split}2014"
        images, annotations = [], []
        image_id = ann_id = 0
        for index, (cat_id, _) in enumerate(COCO_CATEGORIES):
            for i in range(per_class):
                image_id += 1
                name = f"COCO_{split}2014_{image_id:012d}.jpg"
                save_jpg(folder / name, random_image(1000 + image_id))
                images.append({"id": image_id, "file_name": name, "height": H, "width": W})
                ann_id += 1
                y0, x0, y1, x1 = BIG
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat_id, "iscrowd": 0,
                                    "segmentation": box_polygon(y0, x0, y1, x1), "area": float((y1 - y0) * (x1 - x0)),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0]})
                if i == 0:
                    crowd = np.zeros((H, W), dtype=np.uint8, order="F")
                    crowd[30:38, 2:12] = 1
                    rle = mask_utils.encode(crowd)
                    counts = _uncompressed_counts(crowd)
                    ann_id += 1
                    annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat_id, "iscrowd": 1,
                                        "segmentation": {"size": [H, W], "counts": counts},
                                        "area": float(mask_utils.area(rle)), "bbox": [2, 30, 10, 8]})
                    other = COCO_CATEGORIES[(index + 1) % len(COCO_CATEGORIES)][0]
                    obj = np.zeros((H, W), dtype=np.uint8, order="F")
                    obj[28:36, 30:50] = 1
                    rle = mask_utils.encode(obj)
                    ann_id += 1
                    annotations.append({"id": ann_id, "image_id": image_id, "category_id": other, "iscrowd": 0,
                                        "segmentation": {"size": [H, W], "counts": rle["counts"].decode()},
                                        "area": float(mask_utils.area(rle)), "bbox": [30, 28, 20, 8]})
        # an image whose only annotation of its class is a crowd: it must not be listed
        image_id += 1
        name = f"COCO_{split}2014_{image_id:012d}.jpg"
        save_jpg(folder / name, random_image(5000 + image_id))
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
        crowd = np.zeros((H, W), dtype=np.uint8)
        crowd[0:10, 0:10] = 1
        ann_id += 1
        annotations.append({"id": ann_id, "image_id": image_id, "category_id": COCO_CATEGORIES[0][0], "iscrowd": 1,
                            "segmentation": {"size": [H, W], "counts": _uncompressed_counts(crowd)},
                            "area": 100.0, "bbox": [0, 0, 10, 10]})
        data = {"images": images, "annotations": annotations,
                "categories": [{"id": i, "name": n, "supercategory": "thing"} for i, n in COCO_CATEGORIES]}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths of 0s and 1s in column-major order, starting with 0s."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_coco(root)
    return root


# ---------------------------------------------------------------------------------------------
# FSS-1000 and own data

FSS_CLASSES = ["abacus", "bee", "cactus", "dolphin", "eagle", "fox", "gazelle", "hammer", "iguana", "jellyfish"]


def binary_mask(seed: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y0 + h // 3, x0:x0 + w // 3] = 255
    return mask


def make_fss(root: Path, per_class: int = 3) -> None:
    for k, name in enumerate(FSS_CLASSES):
        for n in range(1, per_class + 1):
            save_jpg(root / name / f"{n}.jpg", random_image(k * 100 + n))
            save_grey(root / name / f"{n}.png", binary_mask(k * 100 + n))


@pytest.fixture
def fss_root(tmp_path) -> Path:
    root = tmp_path / "fss"
    make_fss(root)
    return root


FOLDER_CLASSES = ["cup", "duck", "kettle"]


def make_folder(root: Path, per_class: int = 3) -> None:
    for k, name in enumerate(FOLDER_CLASSES):
        for n in range(per_class):
            save_jpg(root / name / "images" / f"img{n}.jpg", random_image(7000 + 10 * k + n))
            save_grey(root / name / "masks" / f"img{n}.png", binary_mask(7000 + 10 * k + n))


@pytest.fixture
def folder_root(tmp_path) -> Path:
    root = tmp_path / "own"
    make_folder(root)
    return root


VOCLIKE_CLASSES = ["background", "apple", "banana", "cherry"]


def make_voclike(root: Path) -> None:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(VOCLIKE_CLASSES) + "\n")
    n = 0
    for c in range(1, len(VOCLIKE_CLASSES)):
        for i in range(3):
            n += 1
            objects = [(c, BIG)] + ([(c % 3 + 1, SMALL)] if i == 0 else [])
            save_jpg(root / "JPEGImages" / f"img{n:03d}.jpg", random_image(9000 + n))
            save_palette(root / "SegmentationClass" / f"img{n:03d}.png", label_map(objects))
    # an unlabelled photo, normal in VOC-style folders
    save_jpg(root / "JPEGImages" / "unlabelled.jpg", random_image(9999))


@pytest.fixture
def voclike_root(tmp_path) -> Path:
    root = tmp_path / "voclike"
    make_voclike(root)
    return root
