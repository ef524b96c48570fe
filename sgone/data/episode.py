"""The episode structure shared by every data source, and the `Source` base class."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sgone.errors import SgoneError
from sgone.io import user_cache_dir

IGNORE = 255
ROLES = ("train", "test")
SPLITS = ("train", "val")
CACHE_VERSION = 1


@dataclass
class Episode:
    """One few-shot episode at original resolution (numpy, uint8).

    support_images[way][shot]: HxWx3 RGB; support_masks[way][shot]: HxW {0, 1, 255};
    query_image: HxWx3; query_mask: HxW {0 = background, c = way c (1-based), 255 = ignore}.
    """

    support_images: list[list[np.ndarray]]
    support_masks: list[list[np.ndarray]]
    query_image: np.ndarray
    query_mask: np.ndarray
    class_ids: list[int]
    class_names: list[str]
    support_names: list[list[str]] = field(default_factory=list)
    query_name: str = ""
    # The untransformed query label, kept by evaluation so scores use the label's own resolution.
    query_mask_original: np.ndarray | None = None

    @property
    def ways(self) -> int:
        return len(self.support_images)

    @property
    def shots(self) -> int:
        return len(self.support_images[0])


class Source:
    """One data set: classes split into folds, images listed per class, loaded with a binary mask.

    Subclasses set `name`, `class_names` ({class id: name}), `folds` and `root`, and implement
    `classes`, `items` and `load`. Problems found while reading the layout go to `problems`;
    with `strict=True` (the default) the constructor raises the first one as SgoneError.
    """

    name: str = "source"
    class_names: dict[int, str] = {}
    folds: int = 1
    root: Path | None = None
    # Sources assign their own lists in __init__; the empty tuples only serve sources that find no problems.
    problems: list[str] | tuple[str, ...] = ()
    notes: list[str] | tuple[str, ...] = ()  # worth telling the user (e.g. "wrote a class split to ...")

    def classes(self, fold: int, role: str) -> list[int]:
        """Class ids of `fold`: role "test" = the fold's unseen classes, "train" = all others."""
        raise NotImplementedError

    def items(self, split: str, class_id: int) -> list[str]:
        """Keys of the images of image split `split` ("train" or "val") that hold `class_id`."""
        raise NotImplementedError

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(image HxWx3 uint8, mask HxW uint8: 1 = class_id, 0 = other, 255 = ignore)."""
        raise NotImplementedError

    def load_mask(self, key: str, class_id: int) -> np.ndarray:
        """Only the mask of `load`; sources override it when the image need not be read."""
        return self.load(key, class_id)[1]

    def check(self, shots: int = 1) -> list[str]:
        """Every problem found: layout problems, then classes with fewer than shots + 1 images."""
        return list(self.problems) + self.count_problems(shots)

    def count_problems(self, shots: int = 1) -> list[str]:
        """Classes that cannot make a `shots`-shot episode (support + a different query).

        Train-role classes are counted in image split "train", test-role classes in "val".
        """
        used: dict[str, set[int]] = {"train": set(), "val": set()}
        for fold in range(self.folds):
            used["train"].update(self.classes(fold, "train"))
            used["val"].update(self.classes(fold, "test"))
        counts = {(split, c): len(self.items(split, c)) for split in SPLITS for c in sorted(used[split])}
        if not any(counts.values()):
            # nothing was found at all: one line, not one per class (layout problems say why)
            return [] if self.problems else [f"{self.root}: no images found"]
        problems = []
        for split in SPLITS:
            for class_id in sorted(used[split]):
                count = counts[split, class_id]
                if count < shots + 1:
                    problems.append(
                        f"{self.root}: class {class_id} '{self.class_names.get(class_id, class_id)}' has "
                        f"{count} image(s) in split '{split}', {shots}-shot episodes need {shots + 1}")
        return problems

    def check_fold(self, fold: int, role: str) -> None:
        """Raise SgoneError for a fold or role this source does not have."""
        if role not in ROLES:
            raise SgoneError(f"{self.root}: unknown role '{role}' (expected one of {', '.join(ROLES)})")
        if not 0 <= int(fold) < self.folds:
            raise SgoneError(f"{self.root}: {self.name} has folds 0..{self.folds - 1}, got fold {fold}")

    def check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise SgoneError(f"{self.root}: unknown image split '{split}' (expected one of {', '.join(SPLITS)})")

    def finish_init(self, strict: bool) -> None:
        """End of a constructor: raise the first layout problem unless the caller asked to collect them."""
        if strict and self.problems:
            raise SgoneError(self.problems[0])


def binary_from_labels(labels: np.ndarray, class_id: int, ignored_ids=()) -> np.ndarray:
    """Class-id label map -> mask {0, 1 = class_id, 255 = ignore (kept from the label, and where the
    label is one of `ignored_ids`, e.g. classes held out of training)}."""
    mask = (labels == class_id).astype(np.uint8)
    ignore = labels == IGNORE
    if len(ignored_ids):
        ignore |= np.isin(labels, np.asarray(ignored_ids)) & (mask == 0)
    mask[ignore] = IGNORE
    return mask


def check_same_size(image_shape: tuple, mask_shape: tuple, mask_path: str | Path) -> None:
    """Raise SgoneError when a mask does not have its image's height and width."""
    if tuple(image_shape[:2]) != tuple(mask_shape[:2]):
        raise SgoneError(f"{mask_path}: mask is {mask_shape[1]}x{mask_shape[0]} but its image is "
                         f"{image_shape[1]}x{image_shape[0]} (width x height)")


# ---------------------------------------------------------------------------------------------
# Batching


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    # np.array copies: arrays read through PIL are read-only, which torch.from_numpy warns about
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(mask, dtype=np.int64))


def collate(episodes: list[Episode]) -> dict[str, Any]:
    """Stack episodes into the batch contract of docs/architecture.md.

    support_images (B,N,K,3,S,S) float in [0, 1], support_masks (B,N,K,S,S) long,
    query_image (B,3,S,S) float, query_mask (B,S,S) long, class_ids (B,N) long, plus
    class_names / support_names / query_name lists. When every episode kept its original
    query label, `query_mask_original` is (B,H,W) long if the sizes agree (always for B = 1),
    otherwise a list of (H,W) tensors.
    """
    if not episodes:
        raise ValueError("collate needs at least one episode")
    # Supports and queries are stacked separately, so at size=None a 1-shot batch of one episode
    # works at any sizes; anything stacked together must share its size.
    support_shapes = {img.shape for ep in episodes for row in ep.support_images for img in row}
    query_shapes = {ep.query_image.shape for ep in episodes}
    if len(support_shapes) > 1 or len(query_shapes) > 1:
        raise ValueError(f"images of sizes {sorted(support_shapes | query_shapes)} cannot be stacked; "
                         "resize them with a fixed-size transform")
    batch: dict[str, Any] = {
        "support_images": torch.stack([
            torch.stack([torch.stack([_image_tensor(img) for img in row]) for row in ep.support_images])
            for ep in episodes]),
        "support_masks": torch.stack([
            torch.stack([torch.stack([_mask_tensor(m) for m in row]) for row in ep.support_masks])
            for ep in episodes]),
        "query_image": torch.stack([_image_tensor(ep.query_image) for ep in episodes]),
        "query_mask": torch.stack([_mask_tensor(ep.query_mask) for ep in episodes]),
        "class_ids": torch.tensor([list(ep.class_ids) for ep in episodes], dtype=torch.long),
        "class_names": [list(ep.class_names) for ep in episodes],
        "support_names": [[list(row) for row in ep.support_names] for ep in episodes],
        "query_name": [ep.query_name for ep in episodes],
    }
    originals = [ep.query_mask_original for ep in episodes]
    if all(m is not None for m in originals):
        tensors = [_mask_tensor(m) for m in originals]
        same = len({t.shape for t in tensors}) == 1
        batch["query_mask_original"] = torch.stack(tensors) if same else tensors
    return batch


# ---------------------------------------------------------------------------------------------
# Cached per-class lists (JSON, written atomically, reused while the settings match)


def cache_candidates(root: Path, cache_dir: str | Path | None) -> list[Path]:
    """Folders to try in order: the user's `cache_dir`, else beside the data, else the user cache."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]
    return [Path(root) / ".sgone-cache", user_cache_dir() / "lists" / f"{Path(root).name}-{tag}"]


def settings_key(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def cached_json(kind: str, settings: dict, build: Callable[[], Any], root: Path,
                cache_dir: str | Path | None = None) -> tuple[Any, Path | None]:
    """Return (data, cache path): the cached result of `build()` for these settings, else build and save.

    The file `<dir>/<kind>-<key>.json` holds {"version", "kind", "settings", "data"}; `key`
    hashes the settings, and the settings are compared again on load. A cache that cannot be
    written (read-only everywhere) is not an error: the lists are rebuilt next time.
    """
    from sgone.io import atomic_write

    settings = {"version": CACHE_VERSION, **settings}
    name = f"{kind}-{settings_key(settings)}.json"
    candidates = cache_candidates(root, cache_dir)
    for folder in candidates:
        path = folder / name
        if path.is_file():
            try:
                payload = json.loads(path.read_text())
                if payload.get("settings") == settings and payload.get("kind") == kind:
                    return payload["data"], path
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt below
    data = build()
    text = json.dumps({"version": CACHE_VERSION, "kind": kind, "settings": settings, "data": data})
    for folder in candidates:
        path = folder / name
        try:
            atomic_write(path, text)
            return data, path
        except (OSError, SgoneError):
            continue
    return data, None
