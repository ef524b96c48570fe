"""Your own data, in one of two layouts; one fold (0) whose test classes you name.

FolderSource:   <root>/<class>/images/<stem>.<ext> with <root>/<class>/masks/<stem>.<ext>
                (binary masks: 0/1, 0/255, or any non-black colour; 255 in a 0/1 mask = ignore).
VocLikeSource:  <root>/JPEGImages/<stem>.jpg, <root>/SegmentationClass/<stem>.png (palette or
                grey PNGs of class ids, 255 = ignore) and a class-name file: line i names class
                id i, line 0 is the background. Images without a label map are not used.

Own data has no image split: both splits ("train", "val") list every image of a class.
`test_classes` (names, or one comma-separated string) picks the unseen classes; None = all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sgone.data.episode import IGNORE, Source, binary_from_labels, cached_json, check_same_size
from sgone.data.pascal import scan_label_maps, stems_digest, summarise
from sgone.errors import SgoneError
from sgone.io import IMAGE_SUFFIXES, read_image, read_label, read_mask


def _names(test_classes: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if test_classes is None:
        return None
    if isinstance(test_classes, str):
        test_classes = test_classes.split(",")
    return [n.strip() for n in test_classes if n.strip()]


class _OwnData(Source):
    """Shared by both layouts: one fold, test classes picked by name, identical splits."""

    folds = 1

    def _pick_tests(self, test_classes, where: Path) -> None:
        ids = {name: c for c, name in self.class_names.items()}
        names = _names(test_classes)
        if names is None:
            self.test_ids = sorted(self.class_names)
            return
        unknown = [n for n in names if n not in ids]
        for name in unknown:
            self.problems.append(f"{where}: unknown class name '{name}' (known: {', '.join(sorted(ids))})")
        self.test_ids = sorted(ids[n] for n in names if n in ids)

    def classes(self, fold: int, role: str) -> list[int]:
        self.check_fold(fold, role)
        if role == "test":
            return list(self.test_ids)
        return [c for c in sorted(self.class_names) if c not in self.test_ids]

    def items(self, split: str, class_id: int) -> list[str]:
        self.check_split(split)
        return list(self._keys.get(class_id, []))


class FolderSource(_OwnData):
    """<root>/<class>/images + <root>/<class>/masks, matched by file stem. Keys are "<class>/<stem>"."""

    name = "folder"

    def __init__(self, root: str | Path, test_classes: str | list[str] | None = None, strict: bool = True) -> None:
        self.root = Path(root)
        self.problems, self.notes = [], []
        self.class_names: dict[int, str] = {}
        self._keys: dict[int, list[str]] = {}
        self._files: dict[str, tuple[Path, Path]] = {}
        self.test_ids: list[int] = []
        if not self.root.is_dir():
            self.problems.append(f"{self.root}: folder not found")
        else:
            self._scan()
            self._pick_tests(test_classes, self.root)
        self.finish_init(strict)

    def _scan(self) -> None:
        problems = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            image_dir, mask_dir = folder / "images", folder / "masks"
            missing = [d for d in (image_dir, mask_dir) if not d.is_dir()]
            if missing:
                problems += [f"{d}: folder not found (each class needs images/ and masks/)" for d in missing]
                continue
            images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
            masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
            problems += [f"{images[s]}: image has no mask in {mask_dir}" for s in sorted(set(images) - set(masks))]
            problems += [f"{masks[s]}: mask has no image in {image_dir}" for s in sorted(set(masks) - set(images))]
            class_id = len(self.class_names) + 1
            self.class_names[class_id] = folder.name
            keys = []
            for stem in sorted(set(images) & set(masks)):
                key = f"{folder.name}/{stem}"
                self._files[key] = (images[stem], masks[stem])
                keys.append(key)
            self._keys[class_id] = keys
        self.problems += problems
        if not self.class_names:
            self.problems.append(f"{self.root}: no class folders (expected <class>/images and <class>/masks)")

    def check(self, shots: int = 1) -> list[str]:
        """Also compares every mask's size with its image's (reads the headers)."""
        mismatched = []
        for image_path, mask_path in self._files.values():
            try:
                with Image.open(image_path) as im, Image.open(mask_path) as m:
                    if im.size != m.size:
                        mismatched.append(f"{mask_path}: mask is {m.size[0]}x{m.size[1]} but its image is "
                                          f"{im.size[0]}x{im.size[1]} (width x height)")
            except OSError as exc:
                mismatched.append(f"{mask_path}: cannot read ({exc})")
        return list(self.problems) + mismatched + self.count_problems(shots)

    def _paths(self, key: str) -> tuple[Path, Path]:
        if key not in self._files:
            raise SgoneError(f"{self.root / key}: no such image")
        return self._files[key]

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self._paths(key)
        image = read_image(image_path)
        mask = self.load_mask(key, class_id)
        check_same_size(image.shape, mask.shape, mask_path)
        return image, mask

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        mask = read_mask(self._paths(key)[1])
        if key.split("/", 1)[0] != self.class_names.get(class_id):
            mask = np.where(mask == IGNORE, IGNORE, 0).astype(np.uint8)  # another class's image
        return mask


class VocLikeSource(_OwnData):
    """JPEGImages + SegmentationClass label maps + a class-name file. Keys are file stems.

    drop_small / min_pixels as in PascalSource (off by default). Classes with fewer than
    `min_images` images (default 2: a 1-shot episode) are dropped with one note, not refused;
    their pixels count as background for the other classes. Label maps are scanned once
    and the per-image class pixel counts cached as JSON beside the data (or in `cache_dir`).
    """

    name = "voclike"

    def __init__(self, root: str | Path, class_names_file: str | Path | None = None,
                 test_classes: str | list[str] | None = None, drop_small: bool = False, min_pixels: int = 0,
                 cache_dir: str | Path | None = None, min_images: int = 2, strict: bool = True) -> None:
        self.root = Path(root)
        self.problems, self.notes = [], []
        self.class_names: dict[int, str] = {}
        self._keys: dict[int, list[str]] = {}
        self.test_ids: list[int] = []
        self.image_dir, self.mask_dir = self.root / "JPEGImages", self.root / "SegmentationClass"
        self.drop_small, self.min_pixels = drop_small, int(min_pixels)
        self.cache_path: Path | None = None
        if self._layout(class_names_file):
            self._index(cache_dir)
            self._drop_rare(int(min_images))
            self._pick_tests(test_classes, self.names_file)
        self.finish_init(strict)

    def _layout(self, class_names_file: str | Path | None) -> bool:
        if not self.root.is_dir():
            self.problems.append(f"{self.root}: folder not found")
            return False
        for folder in (self.image_dir, self.mask_dir):
            if not folder.is_dir():
                self.problems.append(f"{folder}: folder not found")
        if class_names_file is None:
            self.problems.append(f"{self.root}: a class-name file is needed (one name per line, line 0 background)")
            return False
        path = Path(class_names_file)
        if not path.is_file() and not path.is_absolute() and (self.root / path).is_file():
            path = self.root / path  # relative names may be given relative to the data folder
        self.names_file = path
        if not path.is_file():
            self.problems.append(f"{path}: class-name file not found")
            return False
        lines = [line.strip() for line in path.read_text().splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if len(lines) < 2:
            self.problems.append(f"{path}: needs a background line and at least one class name")
            return False
        for i, name in enumerate(lines[1:], start=1):
            if not name:
                self.problems.append(f"{path}: line {i + 1} (class id {i}) is empty")
            self.class_names[i] = name or f"class{i}"
        return not self.problems

    def _index(self, cache_dir: str | Path | None) -> None:
        images = {p.stem for p in self.image_dir.glob("*.jpg")}
        stems = sorted(p.stem for p in self.mask_dir.glob("*.png"))
        self.problems += summarise([f"{self.mask_dir / (s + '.png')}: label map has no image {self.image_dir / (s + '.jpg')}"
                                    for s in stems if s not in images], "label maps without images", self.mask_dir)
        stems = [s for s in stems if s in images]
        settings = {"root": str(self.root.resolve()), "stems": stems_digest(stems), "mask_dir_mtime": self.mask_dir.stat().st_mtime_ns,
                    "classes": len(self.class_names)}
        pairs = [(s, self.image_dir / f"{s}.jpg", self.mask_dir / f"{s}.png") for s in stems]
        scan, self.cache_path = cached_json(
            "voclike", settings, lambda: scan_label_maps(pairs, len(self.class_names), f"scanning {self.mask_dir}"),
            self.root, cache_dir)
        self.problems += summarise(scan["problems"], "broken label maps", self.mask_dir)
        threshold = max(1, self.min_pixels) if self.drop_small else 1
        self._keys = {c: [] for c in self.class_names}
        for stem in stems:
            for cls, pixels in scan["counts"].get(stem, {}).items():
                if pixels >= threshold:
                    self._keys[int(cls)].append(stem)

    def _drop_rare(self, min_images: int) -> None:
        """Classes with fewer than `min_images` images cannot make an episode: dropped with one note."""
        rare = {c: len(self._keys.get(c, [])) for c in self.class_names if len(self._keys.get(c, [])) < min_images}
        named = [f"{self.class_names[c]} ({n})" for c, n in rare.items() if n]
        if named:
            self.notes.append(f"dropped {len(named)} class(es) with fewer than {min_images} images: {', '.join(named)}")
        for c in rare:
            self.class_names.pop(c)
            self._keys.pop(c, None)

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(self.image_dir / f"{key}.jpg")
        labels = read_label(self.mask_dir / f"{key}.png")
        check_same_size(image.shape, labels.shape, self.mask_dir / f"{key}.png")
        return image, binary_from_labels(labels, class_id)

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        return binary_from_labels(read_label(self.mask_dir / f"{key}.png"), class_id)

