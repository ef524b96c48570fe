"""DAVIS-2016 reader: sequences of 480p frames with one binary object mask per frame.

Layout (both the DAVIS-2016 release and the DAVIS-2017 trainval release are accepted):

    ROOT/JPEGImages/480p/<sequence>/<frame>.jpg
    ROOT/Annotations/480p/<sequence>/<frame>.png
    ROOT/ImageSets/2016/{train,val}.txt     one sequence name a line (DAVIS-2017 release), or
    ROOT/ImageSets/480p/{train,val}.txt     "/JPEGImages/480p/<seq>/<frame>.jpg /Annotations/..." lines

DAVIS-2016 has one object per sequence; DAVIS-2017 annotations hold instance ids, and every
non-zero id is the object (this is how the DAVIS-2017 toolkit scores the 2016 task).
Frames are read one at a time (`DavisSequence.frames`), never a whole sequence at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from sgone.data.episode import Source
from sgone.errors import SgoneError

SPLITS = ("train", "val", "trainval")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def _read_annotation(path: Path) -> np.ndarray:
    """HxW uint8 {0, 1}: every non-zero label (0/255 masks, palette instance ids) is the object."""
    from sgone.io import read_label

    return (read_label(path) > 0).astype(np.uint8)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError as exc:
        raise SgoneError(f"{path}: cannot read the frame ({exc})") from None


def read_sequence_list(spec: str | Path) -> list[str]:
    """Sequence names from a file (one a line, '#' starts a comment) or from a comma list."""
    path = Path(spec).expanduser()
    if path.is_file():
        names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        names = [n for n in names if n]
        if not names:
            raise SgoneError(f"{path}: sequence list is empty")
        return names
    if "," not in str(spec) and ("/" in str(spec) or path.suffix):
        raise SgoneError(f"{path}: sequence list file not found")
    names = [n.strip() for n in str(spec).split(",") if n.strip()]
    if not names:  # else an empty list would silently mean "the whole split"
        raise SgoneError(f"{spec!r}: no sequence names in the list")
    return names


class DavisSequence:
    """One sequence: frame paths in order and their annotations (the first frame's is required)."""

    def __init__(self, name: str, frame_paths: list[Path], annotation_dir: Path) -> None:
        self.name = name
        self.image_dir = frame_paths[0].parent if frame_paths else annotation_dir
        self.frame_paths = frame_paths
        self.annotation_dir = annotation_dir

    def __len__(self) -> int:
        return len(self.frame_paths)

    def __repr__(self) -> str:
        return f"DavisSequence({self.name!r}, {len(self)} frames)"

    @property
    def frame_step(self) -> int:
        """The step between frame numbers (2 for a copy that keeps every second frame; 1 when not numbered)."""
        numbers = [int(p.stem) for p in self.frame_paths if p.stem.isdigit()]
        if len(numbers) != len(self.frame_paths) or len(numbers) < 2:
            return 1
        return int(np.gcd.reduce(np.diff(numbers)))

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frame_paths]

    def annotation_path(self, index: int) -> Path:
        return self.annotation_dir / f"{self.frame_paths[index].stem}.png"

    def read_frame(self, index: int) -> np.ndarray:
        """Frame `index` as HxWx3 uint8 (SgoneError naming the file when it is unreadable)."""
        from sgone.io import read_image

        return read_image(self.frame_paths[index])

    def read_mask(self, index: int) -> np.ndarray:
        """Ground-truth mask of frame `index`, HxW uint8 {0, 1}."""
        path = self.annotation_path(index)
        if not path.is_file():
            raise SgoneError(f"{path}: annotation missing for frame {self.frame_paths[index].name} of {self.name}")
        return _read_annotation(path)

    def first(self) -> tuple[np.ndarray, np.ndarray]:
        """(first frame, its mask): the one-shot support."""
        image, mask = self.read_frame(0), self.read_mask(0)
        if image.shape[:2] != mask.shape:
            raise SgoneError(
                f"{self.annotation_path(0)}: mask is {mask.shape[1]}x{mask.shape[0]}, frame is {image.shape[1]}x{image.shape[0]}"
            )
        if not mask.any():
            raise SgoneError(f"{self.annotation_path(0)}: first-frame mask has no object pixels")
        return image, mask

    def frames(self, start: int = 0) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (frame stem, HxWx3 uint8) from `start` on, one frame in memory at a time."""
        for i in range(start, len(self)):
            yield self.frame_paths[i].stem, self.read_frame(i)


class DavisSource(Source):
    """A DAVIS-2016 tree. As a `Source`, each sequence is one class (ids 1..S in name order):
    role "test" = the val sequences, "train" = the train sequences; items are "<seq>/<frame>"."""

    name = "davis2016"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise SgoneError(f"{self.root}: DAVIS root folder not found")
        self.image_root = self.root / "JPEGImages" / "480p"
        self.annotation_root = self.root / "Annotations" / "480p"
        for folder in (self.image_root, self.annotation_root):
            if not folder.is_dir():
                raise SgoneError(f"{folder}: folder not found (expected a DAVIS tree with JPEGImages/480p and Annotations/480p)")
        self._split_cache: dict[str, list[str]] = {}
        all_names = sorted(p.name for p in self.image_root.iterdir() if p.is_dir())
        self.class_names = {i + 1: n for i, n in enumerate(all_names)}
        self._ids = {n: i for i, n in self.class_names.items()}

    # --- splits and sequences -------------------------------------------------------------
    def available_splits(self) -> list[str]:
        """The splits whose list exists ("trainval" when both do)."""
        found = []
        for split in ("train", "val"):
            try:
                self.split_file(split)
                found.append(split)
            except SgoneError:
                pass
        return found + (["trainval"] if len(found) == 2 else [])

    def check(self, split: str) -> list[str]:
        """Problems of `split`'s sequences, all at once (see `check_sequences`)."""
        return self.check_sequences(self.sequences(split))

    def check_sequences(self, names: list[str]) -> list[str]:
        """Problems of these sequences, all at once: missing folders or frames, frames without an
        annotation, a first mask that is empty or of another size than its frame, frames of
        another size than the first (frame headers only: cheap)."""
        problems = []
        for name in names:
            try:
                seq = self.sequence(name)
            except SgoneError as exc:
                problems.append(str(exc))
                continue
            missing = [p.name for p in seq.frame_paths if not (seq.annotation_dir / f"{p.stem}.png").is_file()]
            if missing:
                problems.append(f"{seq.annotation_dir}: no annotation for {len(missing)} frame(s), e.g. {missing[0]}")
            try:
                seq.first()
            except SgoneError as exc:
                problems.append(str(exc))
                continue
            size = _image_size(seq.frame_paths[0])
            odd = [p.name for p in seq.frame_paths[1:] if _image_size(p) != size]
            if odd:
                problems.append(f"{seq.image_dir}: {len(odd)} frame(s) differ in size from the first, e.g. {odd[0]}")
        return problems

    def require(self, names: list[str]) -> None:
        """SgoneError (one line: the first problem and how many more) unless `check_sequences` finds
        nothing, so that an evaluation fails before a model loads, not after an hour of frames."""
        problems = self.check_sequences(names)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s): sgone data --dataset davis2016 --root {self.root} lists them)" if len(problems) > 1 else ""
            raise SgoneError(problems[0] + more)

    def split_file(self, split: str) -> Path:
        """The list of `split`: ImageSets/2016/<split>.txt, else ImageSets/480p/<split>.txt."""
        candidates = [self.root / "ImageSets" / "2016" / f"{split}.txt", self.root / "ImageSets" / "480p" / f"{split}.txt"]
        for path in candidates:
            if path.is_file():
                return path
        raise SgoneError(f"{candidates[0]}: split list not found (nor {candidates[1]})")

    def sequences(self, split: str = "val") -> list[str]:
        """Sequence names of `split` ("train", "val"; "trainval" = both), in list order."""
        if split not in SPLITS:
            raise SgoneError(f"{self.root}: unknown DAVIS split {split!r}; use one of {', '.join(SPLITS)}")
        if split == "trainval":
            return self.sequences("train") + [n for n in self.sequences("val") if n not in self.sequences("train")]
        if split not in self._split_cache:
            path = self.split_file(split)
            names: list[str] = []
            for lineno, line in enumerate(path.read_text().splitlines(), start=1):
                token = line.split()[0] if line.split() else ""
                if not token:
                    continue
                if "/" in token:  # DAVIS-2016 release: "/JPEGImages/480p/<seq>/<frame>.jpg ..."
                    parts = [p for p in token.split("/") if p]
                    if len(parts) < 2:
                        raise SgoneError(f"{path}:{lineno}: cannot read a sequence name from {token!r}")
                    token = parts[-2]
                if token not in names:
                    names.append(token)
            if not names:
                raise SgoneError(f"{path}: split list is empty")
            self._split_cache[split] = names
        return list(self._split_cache[split])

    def sequence(self, name: str) -> DavisSequence:
        """The sequence `name`; SgoneError naming the folder when frames or annotations are missing."""
        folder = self.image_root / name
        if not folder.is_dir():
            raise SgoneError(f"{folder}: sequence folder not found")
        frames = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
        if not frames:
            raise SgoneError(f"{folder}: no frames (.jpg) in sequence folder")
        annotations = self.annotation_root / name
        if not annotations.is_dir():
            raise SgoneError(f"{annotations}: annotation folder not found")
        return DavisSequence(name, frames, annotations)

    # --- the Source interface (minimal: one class per sequence) ---------------------------
    def classes(self, fold: int, role: str) -> list[int]:
        split = "val" if role == "test" else "train"
        return [self._ids[n] for n in self.sequences(split) if n in self._ids]

    def items(self, split: str, class_id: int) -> list[str]:
        name = self.class_names[class_id]
        seq = self.sequence(name)
        return [f"{name}/{stem}" for stem in seq.frame_names]

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        name, stem = key.split("/", 1)
        seq = self.sequence(name)
        index = seq.frame_names.index(stem)
        return seq.read_frame(index), seq.read_mask(index)


CATEGORIES_FILE = Path(__file__).with_name("lists") / "davis2016_train_categories.txt"


def read_categories(path: str | Path = CATEGORIES_FILE) -> dict[str, set[str]]:
    """sequence -> the class names its mask covers ("sequence<TAB>a,b,c" lines, '#' comments)."""
    out: dict[str, set[str]] = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, names = line.partition("\t")
            out[name.strip()] = {n.strip() for n in names.split(",") if n.strip()}
    return out


class DavisObjectSource:
    """DAVIS train sequences as extra OBJECT classes of a mixed data set, for training only.

    One class per sequence (own ids 1..S in name order), its frames whose mask is not empty as
    images and the mask (any non-zero label) as the object; which frames are empty is found once
    and cached as JSON (as a voclike root's class counts). Its classes are never test classes: `MixSource` leaves a
    sequence out of a fold's training when one of its `categories` (what the mask covers, as the
    corpora name it, from `CATEGORIES_FILE`) is a test class of the fold. A sequence without an
    entry there is refused (it could hide a test class). Keys are "<seq>/<frame stem>".
    """

    train_only = True

    def __init__(self, root: str | Path, categories: dict[str, set[str]] | None = None, split: str = "train",
                 cache_dir: str | Path | None = None) -> None:
        self.root = Path(root)
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.class_names: dict[int, str] = {}
        self.categories: dict[int, set[str]] = {}
        self._frames: dict[int, list[str]] = {}
        self._files: dict[str, Path] = {}
        self._ids: dict[str, int] = {}
        known = read_categories() if categories is None else categories
        try:
            davis = DavisSource(self.root)
            names = davis.sequences(split)
        except SgoneError as exc:
            self.problems.append(str(exc))
            return
        self.image_dir, self.mask_dir = davis.image_root, davis.annotation_root
        unnamed = [n for n in names if n not in known]
        if unnamed:
            self.problems.append(f"{self.root}: {len(unnamed)} sequence(s) without an entry in {CATEGORIES_FILE.name} "
                                 f"(what their masks cover decides the folds that may train on them): {', '.join(unnamed[:5])}")
        self.problems += davis.check_sequences(names)
        if self.problems:
            return
        sequences = [davis.sequence(name) for name in sorted(names)]
        with_object = self._frames_with_object(sequences, cache_dir)
        for i, seq in enumerate(sequences, start=1):
            self.class_names[i] = seq.name
            self.categories[i] = set(known[seq.name])
            self._frames[i] = [stem for stem in seq.frame_names if stem in with_object[seq.name]]
            self._files.update({f"{seq.name}/{p.stem}": p for p in seq.frame_paths})
        self._ids = {name: i for i, name in self.class_names.items()}

    def _frames_with_object(self, sequences: list[DavisSequence], cache_dir: str | Path | None) -> dict[str, set[str]]:
        from sgone.data.episode import cached_json
        from sgone.data.pascal import stems_digest

        paths = [seq.annotation_path(i) for seq in sequences for i in range(len(seq))]
        settings = {"root": str(self.root.resolve()), "masks": stems_digest([str(p) for p in paths]),
                    "mtimes": max(seq.annotation_dir.stat().st_mtime_ns for seq in sequences)}

        def scan() -> dict[str, list[str]]:
            return {seq.name: [seq.frame_paths[i].stem for i in range(len(seq)) if seq.read_mask(i).any()]
                    for seq in sequences}

        found, _ = cached_json("davis-objects", settings, scan, self.root, cache_dir)
        return {name: set(stems) for name, stems in found.items()}

    def items(self, split: str, class_id: int) -> list[str]:
        name = self.class_names[class_id]
        return [f"{name}/{stem}" for stem in self._frames.get(class_id, [])]

    def image_file(self, key: str) -> Path:
        return self._files.get(key, self.image_dir / f"{key}.jpg")

    def label_file(self, key: str) -> Path:
        return self.mask_dir / f"{key}.png"

    def read_labels(self, key: str) -> np.ndarray:
        """The frame's mask as a label map in own ids: the sequence's id on the object, 0 elsewhere."""
        return _read_annotation(self.label_file(key)) * np.uint8(self._ids[key.split("/", 1)[0]])

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        from sgone.data.episode import check_same_size
        from sgone.io import read_image

        image, mask = read_image(self.image_file(key)), self.load_mask(key, class_id)
        check_same_size(image.shape, mask.shape, self.label_file(key))
        return image, mask

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        return (self.read_labels(key) == class_id).astype(np.uint8)
