"""Several voclike corpora as one data set, with class folds over the mixed class list.

    MixSource(["../shared/data/ccp", "../shared/data/coco128", "../shared/data/camvid"])

Each root is a voclike folder (JPEGImages/, SegmentationClass/, classes.txt). The source of a
root is its folder name (or NAME in "NAME=PATH"). Class names are kept where they are unique and
prefixed by their source where two sources share one ("coco128/car", "camvid/car").

A root in the DAVIS layout (JPEGImages/480p/<seq>/) adds its train sequences as extra OBJECT
classes for training only (`sgone.data.davis.DavisObjectSource`, one class per sequence, named
"<source>/<seq>"): they are in no fold's test list and leave the folds and split files as they
are; a sequence is left out of a fold's training when what its mask covers (its categories,
e.g. "person, skin, hair" or "car") names one of the fold's test classes.

Long tails: a class with fewer than `min_images` images cannot make the episodes that the
project evaluates (5-shot needs 6 images), so it is dropped with ONE summarised note (how many,
which) instead of a refusal.

Folds: classes that share a plain name form one group (so "car" of COCO and of CamVid are
held out together: a fold's test classes are never seen in training, under any name). Groups
are ordered by a seeded hash of their name and dealt to the `folds` folds in turn, which is
deterministic and independent of the order of the roots. `write_splits(folder)` writes
`fold<F>.txt` (one test class a line, "source<TAB>class") so the split can be shown, checked and
given back with `splits=folder`. `folds=0` holds nothing out (for a final model trained on every
class): the one fold's train and test classes are all classes.

Image splits: the corpora have no image split that every class can use, so both "train" and
"val" list every image of a class (as own data does). What keeps training honest is the mask
rule of the training path (`sgone.engine.cached_episodes`): pixels of the fold's test classes
are set to 255 (ignored) in every training mask, so a test class is learnt neither as object
nor as background.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sgone.data.davis import DavisObjectSource, read_categories
from sgone.data.episode import Source
from sgone.data.folder import VocLikeSource
from sgone.data.pascal import summarise
from sgone.errors import SgoneError

MIN_IMAGES = 6  # a 5-shot episode: 5 supports and a different query


def parse_root(spec: str | Path) -> tuple[str, Path]:
    """"NAME=PATH" or "PATH" (name = the folder's name) -> (name, path)."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, path = text.split("=", 1)
        return name.strip(), Path(path)
    path = Path(text)
    return path.resolve().name if path.name in ("", ".", "..") else path.name, path


def fold_of_groups(names: list[str], folds: int, seed: int = 0) -> dict[str, int]:
    """Plain class names -> fold: ordered by a seeded hash, dealt round-robin (deterministic)."""
    order = sorted(set(names), key=lambda n: hashlib.sha1(f"{seed}:{n}".encode()).hexdigest())
    return {name: i % folds for i, name in enumerate(order)}


class MixSource(Source):
    """Voclike roots as one source. Class ids 1..N in (source, class id) order; keys "source:stem"."""

    name = "mix"
    val_is_train = True  # both image splits list every image (see the module docstring)

    def __init__(self, root: str | Path | list, folds: int = 4, min_images: int = MIN_IMAGES,
                 split_seed: int = 0, splits: str | Path | None = None, class_names_file: str = "classes.txt",
                 cache_dir: str | Path | None = None, strict: bool = True,
                 davis_categories: str | Path | None = None) -> None:
        roots = [root] if isinstance(root, (str, Path)) else list(root)
        if isinstance(root, str) and "," in root and not Path(root).exists():
            roots = [r for r in root.split(",") if r.strip()]
        self.root = Path(parse_root(roots[0])[1]) if roots else Path(".")
        # folds=0: no held-out classes (a final model): one fold whose train and test classes are all classes
        self.holdout = int(folds) != 0
        self.folds = int(folds) if self.holdout else 1
        self.problems, self.notes = [], []
        self.class_names: dict[int, str] = {}
        self.class_source: dict[int, str] = {}
        self.plain_names: dict[int, str] = {}
        self.sources: dict[str, VocLikeSource | DavisObjectSource] = {}
        self._members: dict[int, tuple[str, int]] = {}  # mixed id -> (source name, its own id)
        self._plain_of: dict[tuple[str, int], str] = {}  # (source, own id) -> plain name, dropped classes too
        self._keys: dict[int, list[str]] = {}
        self.fold_of: dict[int, int] = {}
        if int(folds) < 0:
            self.problems.append(f"{self.root}: folds must be 0 (no held-out classes) or more, got {folds}")
        for spec in roots:
            name, path = parse_root(spec)
            if name in self.sources:
                self.problems.append(f"{path}: two roots are named '{name}' (use NAME=PATH to tell them apart)")
                continue
            if (path / "JPEGImages" / "480p").is_dir():
                davis = DavisObjectSource(path, None if davis_categories is None else read_categories(davis_categories),
                                          cache_dir=cache_dir)
                self.problems += davis.problems
                self.sources[name] = davis
                continue
            sub = VocLikeSource(path, class_names_file=class_names_file, cache_dir=cache_dir, min_images=0,
                                strict=False)
            self.problems += sub.problems
            if sub.image_dir.is_dir() and sub.mask_dir.is_dir():
                labelled = {p.stem for p in sub.mask_dir.glob("*.png")}
                self.problems += summarise([f"{p}: image has no label map in {sub.mask_dir}"
                                            for p in sorted(sub.image_dir.glob("*.jpg")) if p.stem not in labelled],
                                           "images without label maps", sub.image_dir)
            self.sources[name] = sub
        if self.sources and all(self._train_only(n) for n in self.sources):
            self.problems.append(f"{self.root}: a DAVIS root only adds training classes; give a voclike root too")
        if not self.problems:
            self._merge(int(min_images))
            self._assign_folds(split_seed, splits)
        self.finish_init(strict)

    def _train_only(self, source_name: str) -> bool:
        return getattr(self.sources[source_name], "train_only", False)

    def _merge(self, min_images: int) -> None:
        counts: dict[str, int] = {}
        for name, sub in self.sources.items():
            for c, plain in sub.class_names.items():
                if not self._train_only(name):
                    counts[plain] = counts.get(plain, 0) + 1
        dropped = []
        # training-only classes last, so that adding them leaves every other class's id as it was
        ordered = sorted(self.sources.items(), key=lambda item: self._train_only(item[0]))
        for source_name, sub in ordered:
            for c, plain in sorted(sub.class_names.items()):
                self._plain_of[(source_name, c)] = plain
                keys = [f"{source_name}:{k}" for k in sub.items("train", c)]
                label = plain if counts.get(plain) == 1 and not self._train_only(source_name) else f"{source_name}/{plain}"
                if len(keys) < min_images:
                    if keys:  # a class that never occurs is not worth a mention
                        dropped.append(f"{label} ({len(keys)})")
                    continue
                mixed = len(self.class_names) + 1
                self.class_names[mixed] = label
                self.class_source[mixed] = source_name
                self.plain_names[mixed] = plain
                self._members[mixed] = (source_name, c)
                self._keys[mixed] = keys
        if dropped:
            self.notes.append(f"dropped {len(dropped)} class(es) with fewer than {min_images} images: "
                              + ", ".join(dropped))
        if not self.class_names:
            self.problems.append(f"{self.root}: no class has {min_images} or more images")

    def is_train_only(self, class_id: int) -> bool:
        """A class of a DAVIS root: extra training data, never a test class."""
        return self._train_only(self.class_source[class_id])

    def categories(self, class_id: int) -> set[str]:
        """The plain class names a class's masks cover: its own, or a DAVIS sequence's categories."""
        name, own = self._members[class_id]
        return set(getattr(self.sources[name], "categories", {}).get(own, {self.plain_names[class_id]}))

    def _assign_folds(self, seed: int, splits: str | Path | None) -> None:
        held = [c for c in self.class_names if not self.is_train_only(c)]
        if splits is None:
            groups = fold_of_groups([self.plain_names[c] for c in held], self.folds, seed)
            self.fold_of = {c: groups[self.plain_names[c]] for c in held}
            return
        by_name = {(self.class_source[c], self.plain_names[c]): c for c in held}
        folder = Path(splits)
        for fold in range(self.folds):
            path = folder / f"fold{fold}.txt"
            if not path.is_file():
                self.problems.append(f"{path}: split file not found")
                continue
            for n, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                key = (parts[0], parts[1]) if len(parts) == 2 else None
                if key not in by_name:
                    self.problems.append(f"{path}: line {n}: unknown class {line.strip()!r} (expected source<TAB>class)")
                    continue
                self.fold_of[by_name[key]] = fold
        missing = [self.class_names[c] for c in held if c not in self.fold_of]
        if missing and not self.problems:
            self.problems.append(f"{folder}: {len(missing)} class(es) in no fold: {', '.join(missing[:10])}")

    # --- the Source contract

    def classes(self, fold: int, role: str) -> list[int]:
        self.check_fold(fold, role)
        if not self.holdout:
            return sorted(self.class_names)
        test = [c for c in sorted(self.class_names) if self.fold_of.get(c) == fold]
        if role == "test":
            return test
        test_names = {self.plain_names[c] for c in test}
        return [c for c in sorted(self.class_names) if c not in test
                and not (self.is_train_only(c) and self.categories(c) & test_names)]

    def items(self, split: str, class_id: int) -> list[str]:
        self.check_split(split)
        return list(self._keys.get(class_id, []))

    def _split_key(self, key: str) -> tuple[VocLikeSource | DavisObjectSource, str]:
        name, _, stem = key.partition(":")
        if name not in self.sources:
            raise SgoneError(f"{self.root}: no source '{name}' for image key '{key}'")
        return self.sources[name], stem

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        sub, stem = self._split_key(key)
        return sub.load(stem, self._members[class_id][1])

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        sub, stem = self._split_key(key)
        return sub.load_mask(stem, self._members[class_id][1])

    # --- helpers for the cached training path

    def image_path(self, key: str) -> Path:
        sub, stem = self._split_key(key)
        return sub.image_file(stem) if hasattr(sub, "image_file") else sub.image_dir / f"{stem}.jpg"

    def label_path(self, key: str) -> Path:
        sub, stem = self._split_key(key)
        return sub.label_file(stem) if hasattr(sub, "label_file") else sub.mask_dir / f"{stem}.png"

    def read_labels(self, key: str) -> np.ndarray:
        """The image's label map in its source's own class ids (`own_id`)."""
        from sgone.io import read_label

        sub, stem = self._split_key(key)
        return sub.read_labels(stem) if hasattr(sub, "read_labels") else read_label(self.label_path(key))

    def own_id(self, class_id: int) -> tuple[str, int]:
        """Mixed class id -> (source name, the class id in that source's label maps)."""
        return self._members[class_id]

    def own_ids(self, source_name: str, class_ids: list[int]) -> list[int]:
        """The label-map ids, in `source_name`, of `class_ids` and of every class of that source that
        shares a plain name with one of them (a dropped rare class included), so that holding out
        `class_ids` holds out those names in every corpus."""
        names = {self.plain_names[c] for c in class_ids}
        return sorted(own for (name, own), plain in self._plain_of.items() if name == source_name and plain in names)

    def write_splits(self, folder: str | Path) -> list[Path]:
        """fold<F>.txt per fold: the fold's test classes, one "source<TAB>class" a line (atomic writes)."""
        from sgone.io import atomic_write

        paths = []
        for fold in range(self.folds):
            lines = [f"{self.class_source[c]}\t{self.plain_names[c]}" for c in self.classes(fold, "test")]
            path = Path(folder) / f"fold{fold}.txt"
            atomic_write(path, "\n".join(lines) + "\n")
            paths.append(path)
        return paths
