"""What `sgone label` reads: the images to label (folders, globs, manifests) and the support set.

Every input image gets a key, its path relative to the folder it was found under (a folder given
as --input, the fixed part of a glob, a manifest's folder); the key names its mask
(`masks/<key>.png`) and its line in index.jsonl, so reruns find what is done.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

from sgone.errors import SgoneError

MANIFEST_SUFFIXES = (".txt", ".lst", ".csv", ".jsonl")
DEFAULT_CLASS = "object"


@dataclass(frozen=True)
class Item:
    """One image to label: `key` (posix, relative, unique) and the file to read."""

    key: str
    path: str


@dataclass
class SupportClass:
    """One class of the support set: its name and its k (image, mask) file pairs."""

    name: str
    images: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------- inputs
def _has_magic(value: str) -> bool:
    return glob.has_magic(value)


def _walk(folder: Path, exclude: Path | None) -> list[Path]:
    """Image files below `folder` (recursive, hidden files and folders skipped), sorted."""
    from sgone.io import IMAGE_SUFFIXES

    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (exclude is None or not _same(here / d, exclude)))
        found += [here / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _relative_key(path: Path, root: Path) -> str:
    """`path` below `root` as a posix key; outside it, the absolute path without its anchor."""
    try:
        rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
    except ValueError:  # another drive (Windows)
        rel = Path("..")
    if rel.parts and rel.parts[0] != "..":
        return PurePosixPath(*rel.parts).as_posix()
    absolute = Path(os.path.abspath(path))
    return PurePosixPath(*absolute.parts[1:]).as_posix()


def read_manifest(path: Path) -> list[str]:
    """The image paths a manifest lists, relative ones resolved against its folder.

    .txt/.lst: one path per line (blank lines and lines starting with # skipped); .csv: a header
    with a `path` column; .jsonl: one JSON object per line with a `path` field.
    """
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SgoneError(f"{path}: cannot read the manifest ({getattr(exc, 'strerror', None) or exc})") from None
    values: list[str] = []
    if suffix == ".csv":
        rows = csv.DictReader(text.splitlines())
        if not rows.fieldnames or "path" not in [f.strip() for f in rows.fieldnames]:
            raise SgoneError(f"{path}: a CSV manifest needs a header with a 'path' column "
                             f"(found: {', '.join(rows.fieldnames or []) or 'no header'})")
        for line, row in enumerate(rows, 2):
            value = ({(k or "").strip(): v for k, v in row.items()}.get("path") or "").strip()
            if not value:
                raise SgoneError(f"{path}: line {line}: empty 'path'")
            values.append(value)
    elif suffix == ".jsonl":
        for line, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SgoneError(f"{path}: line {line}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"].strip():
                raise SgoneError(f"{path}: line {line}: expected an object with a 'path' string")
            values.append(row["path"].strip())
    else:
        values = [v.strip() for v in text.splitlines() if v.strip() and not v.strip().startswith("#")]
    return [str(Path(v) if Path(v).is_absolute() else path.parent / v) for v in values]


def collect_inputs(values: Iterable[str], exclude: Path | None = None) -> list[Item]:
    """--input values -> the images to label, in order, each once.

    A folder stands for the images below it (recursively, `exclude` skipped: the output folder);
    a value with *, ? or [ is a glob (** recurses); a .txt/.lst/.csv/.jsonl file is a manifest;
    any other file is one image. A listed file that is missing or unreadable is kept: labelling
    records its error. Two inputs with the same key (e.g. a.jpg in two folders) are refused.
    """
    from sgone.io import IMAGE_SUFFIXES

    items: list[Item] = []
    owners: dict[str, str] = {}
    seen: set[str] = set()

    def add(path: Path, root: Path) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return  # the same file through two inputs: labelled once
        seen.add(real)
        key = _relative_key(path, root)
        if key.casefold() in owners:
            raise SgoneError(f"{path}: its mask name masks/{key}.png is taken by {owners[key.casefold()]}; "
                             f"pass their common folder as --input instead")
        owners[key.casefold()] = str(path)
        items.append(Item(key, str(path)))

    for value in values:
        path = Path(value)
        if path.is_dir():
            found = _walk(path, exclude)
            if not found:
                raise SgoneError(f"{path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for p in found:
                add(p, path)
        elif _has_magic(value) and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(value, recursive=True))
            matches = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not (exclude is not None and _inside(p, exclude))]
            if not matches:
                raise SgoneError(f"{value}: the pattern matches no image files")
            root = _glob_root(value)
            for p in matches:
                add(p, root)
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            listed = read_manifest(path)
            if not listed:
                raise SgoneError(f"{path}: the manifest lists no images")
            for p in listed:
                add(Path(p), path.parent)
        elif path.is_file():
            add(path, path.parent)
        else:
            raise SgoneError(f"{value}: no such file, folder or glob match")
    return items


def _inside(path: Path, folder: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
    except OSError:
        return False


def _glob_root(pattern: str) -> Path:
    """The folder a glob is fixed to: its parts before the first one with a wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


# ------------------------------------------------------------------------------------ supports
def check_class_name(name: str, where: str) -> str:
    """Class names become folder names (masks/<class>/...) and COCO category names."""
    name = name.strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise SgoneError(f"{where}: class name {name!r} must be a plain folder name (no / or leading dot)")
    return name


def read_supports_file(path: Path) -> list[SupportClass]:
    """A --supports list: CSV with a header (image, mask, class) or JSONL objects with those fields.

    `class` is optional (default "object"); relative paths are resolved against the file's folder.
    Classes keep the order of their first row.
    """
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SgoneError(f"{path}: cannot read the supports list ({getattr(exc, 'strerror', None) or exc})") from None
    rows: list[tuple[int, dict]] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        names = [f.strip() for f in reader.fieldnames or []]
        if "image" not in names or "mask" not in names:
            raise SgoneError(f"{path}: a CSV supports list needs a header with 'image' and 'mask' columns "
                             f"(and optionally 'class'); found: {', '.join(names) or 'no header'}")
        rows = [(i, {(k or "").strip(): (v or "").strip() for k, v in row.items()}) for i, row in enumerate(reader, 2)]
    elif suffix == ".jsonl":
        for i, raw in enumerate(text.splitlines(), 1):
            if raw.strip():
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise SgoneError(f"{path}: line {i}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise SgoneError(f"{path}: line {i}: expected an object with 'image' and 'mask'")
                rows.append((i, row))
    else:
        raise SgoneError(f"{path}: a supports list is a .csv or .jsonl file (columns image, mask, class)")
    classes: dict[str, SupportClass] = {}
    for line, row in rows:
        image, mask = row.get("image"), row.get("mask")
        if not isinstance(image, str) or not image or not isinstance(mask, str) or not mask:
            raise SgoneError(f"{path}: line {line}: needs non-empty 'image' and 'mask'")
        name = check_class_name(str(row.get("class") or DEFAULT_CLASS), f"{path}: line {line}")
        group = classes.setdefault(name, SupportClass(name))
        group.images.append(str(Path(image) if Path(image).is_absolute() else path.parent / image))
        group.masks.append(str(Path(mask) if Path(mask).is_absolute() else path.parent / mask))
    if not classes:
        raise SgoneError(f"{path}: the supports list is empty")
    return list(classes.values())
