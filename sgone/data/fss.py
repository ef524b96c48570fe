"""FSS-1000: one folder per class with `<n>.jpg` images and `<n>.png` binary masks.

Layout under `root`: `<class name>/<n>.jpg` + `<class name>/<n>.png`.
FSS uses a single class split, so the fold argument is ignored (fold 0 is the only fold):
role "train" = train classes, role "test" = test classes (and `classes(0, "val")` the
validation classes). The classes are disjoint, so both image splits list all of a class's images.
The split comes from `split_files` (a folder with train.txt, val.txt and test.txt of class
names, one per line) or, without it, is drawn with `seed` in the published 520/240/240
proportions and written out as such a folder, so that it can be reused and reported.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from sgone.data.episode import IGNORE, ROLES, SPLITS, Source, cache_candidates, check_same_size
from sgone.data.pascal import summarise
from sgone.errors import SgoneError
from sgone.io import atomic_write, read_image, read_mask

CLASS_SPLITS = ("train", "val", "test")
PROPORTIONS = (520, 240, 240)


def natural_key(text: str) -> list:
    """'10' after '9': numbers compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def draw_split(names: list[str], seed: int) -> dict[str, list[str]]:
    """Deterministic train/val/test class split in the 520/240/240 proportions."""
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n = len(order)
    n_train = round(n * PROPORTIONS[0] / sum(PROPORTIONS))
    n_val = round(n * PROPORTIONS[1] / sum(PROPORTIONS))
    if n >= 3:  # every part gets a class even in tiny trees
        n_train = min(max(n_train, 1), n - 2)
        n_val = min(max(n_val, 1), n - n_train - 1)
    return {"train": sorted(order[:n_train]), "val": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


class FssSource(Source):
    """FSS-1000 (see the module docstring). Keys are "<class>/<stem>"."""

    name = "fss"
    folds = 1

    def __init__(self, root: str | Path, split_files: str | Path | None = None, seed: int = 0,
                 cache_dir: str | Path | None = None, strict: bool = True) -> None:
        self.root = Path(root)
        self.seed = seed
        self.problems, self.notes = [], []
        self.class_names: dict[int, str] = {}
        self.split: dict[str, list[int]] = {s: [] for s in CLASS_SPLITS}
        self.split_dir: Path | None = None
        self._keys: dict[int, list[str]] = {}
        if not self.root.is_dir():
            self.problems.append(f"{self.root}: folder not found")
        else:
            self._scan()
            self._read_split(split_files, cache_dir)
        self.finish_init(strict)

    def _scan(self) -> None:
        folders = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.name)
        problems = []
        for folder in folders:
            images = {p.stem: p for p in folder.glob("*.jpg")}
            masks = {p.stem for p in folder.glob("*.png")}
            if not images and not masks:
                continue  # not a class folder (e.g. the split folder)
            for stem in sorted(set(images) - masks, key=natural_key):
                problems.append(f"{folder / (stem + '.jpg')}: image has no mask {stem}.png")
            for stem in sorted(masks - set(images), key=natural_key):
                problems.append(f"{folder / (stem + '.png')}: mask has no image {stem}.jpg")
            class_id = len(self.class_names) + 1
            self.class_names[class_id] = folder.name
            self._keys[class_id] = [f"{folder.name}/{s}" for s in sorted(set(images) & masks, key=natural_key)]
        self.problems += summarise(problems, "unpaired files", self.root)
        if not self.class_names:
            self.problems.append(f"{self.root}: no class folders with <n>.jpg and <n>.png files")

    def _read_split(self, split_files: str | Path | None, cache_dir: str | Path | None) -> None:
        ids = {name: c for c, name in self.class_names.items()}
        if split_files is None:
            split_files = self._write_split(cache_dir)
            if split_files is None:
                return
        folder = Path(split_files)
        self.split_dir = folder
        for part in CLASS_SPLITS:
            path = folder / f"{part}.txt"
            if not path.is_file():
                self.problems.append(f"{path}: class split file not found")
                continue
            for line in path.read_text().splitlines():
                name = line.strip()
                if not name:
                    continue
                if name not in ids:
                    self.problems.append(f"{path}: unknown class name '{name}' (no folder {self.root / name})")
                else:
                    self.split[part].append(ids[name])

    def _write_split(self, cache_dir: str | Path | None) -> Path | None:
        """Reuse or write the seeded split; the note says where it is."""
        names = sorted(self.class_names.values())
        drawn = draw_split(names, self.seed)
        for base in cache_candidates(self.root, cache_dir):
            folder = base / f"fss-split-seed{self.seed}"
            if all((folder / f"{p}.txt").is_file() for p in CLASS_SPLITS):
                on_file = {p: sorted(filter(None, (folder / f"{p}.txt").read_text().split("\n"))) for p in CLASS_SPLITS}
                if on_file == drawn:
                    self.notes.append(f"{folder}: class split drawn with seed {self.seed} (reused)")
                    return folder
            try:
                for part in CLASS_SPLITS:
                    atomic_write(folder / f"{part}.txt", "".join(f"{n}\n" for n in drawn[part]))
            except (OSError, SgoneError):
                continue
            self.notes.append(f"{folder}: wrote a class split drawn with seed {self.seed} "
                              f"({len(drawn['train'])}/{len(drawn['val'])}/{len(drawn['test'])} classes)")
            return folder
        # nowhere to write: keep the split in memory
        for part in CLASS_SPLITS:
            self.split[part] = [c for c, n in self.class_names.items() if n in set(drawn[part])]
        self.notes.append(f"{self.root}: class split drawn with seed {self.seed} could not be saved")
        return None

    def check(self, shots: int = 1) -> list[str]:
        """Also compares every mask's size with its image's (reads the headers)."""
        mismatched = []
        for keys in self._keys.values():
            for key in keys:
                try:
                    with Image.open(self.root / f"{key}.jpg") as im, Image.open(self.root / f"{key}.png") as m:
                        if im.size != m.size:
                            mismatched.append(f"{self.root / (key + '.png')}: mask is {m.size[0]}x{m.size[1]} "
                                              f"but its image is {im.size[0]}x{im.size[1]} (width x height)")
                except OSError as exc:
                    mismatched.append(f"{self.root / key}: cannot read ({exc})")
        return list(self.problems) + summarise(mismatched, "masks of the wrong size", self.root) + \
            self.count_problems(shots)

    # -- Source --------------------------------------------------------------------------------

    def classes(self, fold: int, role: str) -> list[int]:
        if role == "val":
            return list(self.split["val"])
        if role not in ROLES:
            raise SgoneError(f"{self.root}: unknown role '{role}' (expected train, test or val)")
        # fold is ignored: FSS-1000 has a single class split
        return list(self.split["train" if role == "train" else "test"])

    def items(self, split: str, class_id: int) -> list[str]:
        if split not in SPLITS:
            self.check_split(split)
        return list(self._keys.get(class_id, []))

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(self.root / f"{key}.jpg")
        mask = self.load_mask(key, class_id)
        check_same_size(image.shape, mask.shape, self.root / f"{key}.png")
        return image, mask

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        # FSS masks are binary (0/255, sometimes RGB): the class is the folder, not a pixel value,
        # so another class's image holds none of `class_id` (N-way queries ask for that).
        mask = read_mask(self.root / f"{key}.png")
        if key.split("/", 1)[0] != self.class_names.get(class_id):
            mask = np.where(mask == IGNORE, IGNORE, 0).astype(np.uint8)
        return mask
