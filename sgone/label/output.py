"""The output folder of `sgone label`: masks, a journal of per-image results, and the files
rebuilt from it.

    OUTPUT/masks/<key>.png            0/255 at the image's size (several classes: masks/<class>/<key>.png)
    OUTPUT/overlays/<key>.png         with --overlays
    OUTPUT/index.jsonl                one line per input: path, status, foreground share, mean probability, ...
    OUTPUT/annotations.json           COCO instances, RLE segmentations
    OUTPUT/.sgone-label/run.json      the fingerprint: model, options, support files' hashes
    OUTPUT/.sgone-label/results.jsonl the journal: one line per finished image, appended as it is written

A mask is written atomically before its journal line, so after a crash the journal lists only
images whose files are complete; index.jsonl and annotations.json are rebuilt from the journal
(atomically) at the end of every run, interrupted or not.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

from sgone.errors import SgoneError
from sgone.label.inputs import Item

STATE = ".sgone-label"
FINGERPRINT = "run.json"
JOURNAL = "results.jsonl"
INDEX = "index.jsonl"
ANNOTATIONS = "annotations.json"
FORMAT = "sgone-label/1"


def _oserror(path: Path, exc: OSError) -> SgoneError:
    return SgoneError(f"{path}: cannot write ({exc.strerror or exc})")


class LabelOutput:
    """One output folder. `open()` checks the fingerprint, `done()` what a rerun skips,
    `commit()` stores one image, `finish()` rebuilds index.jsonl and annotations.json."""

    def __init__(self, folder: str | Path, classes: Sequence[str], fingerprint: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.classes = list(classes)
        self.fingerprint = {"format": FORMAT, **fingerprint}
        self.state = self.folder / STATE
        self._journal = None
        self._committed: set[str] = set()

    # ------------------------------------------------------------------ paths
    def mask_paths(self, key: str) -> list[Path]:
        if len(self.classes) == 1:
            return [self.folder / "masks" / f"{key}.png"]
        return [self.folder / "masks" / name / f"{key}.png" for name in self.classes]

    def overlay_path(self, key: str) -> Path:
        return self.folder / "overlays" / f"{key}.png"

    # ------------------------------------------------------------------ opening
    def check(self, overwrite: bool = False) -> None:
        """Refuse a folder labelled with another model or support set (unless `overwrite`) or
        holding masks that sgone label did not write. Nothing is changed."""
        if self.folder.exists() and not self.folder.is_dir():
            raise SgoneError(f"{self.folder}: exists and is not a folder")
        if overwrite:
            return
        stored = self.stored_fingerprint()
        if stored is None:
            if (self.folder / "masks").exists() or (self.folder / ANNOTATIONS).exists():
                raise SgoneError(f"{self.folder}: holds masks/ or {ANNOTATIONS} that sgone label did not write "
                                 f"(no {STATE}/{FINGERPRINT}); choose another --output or pass --overwrite")
            return
        if stored != self.fingerprint:
            raise SgoneError(f"{self.folder}: labelled before with {_difference(stored, self.fingerprint)}; "
                             f"choose another --output or pass --overwrite to start again")

    def stored_fingerprint(self) -> dict[str, Any] | None:
        path = self.state / FINGERPRINT
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SgoneError(f"{path}: unreadable ({exc}); pass --overwrite to start again") from None

    def open(self, overwrite: bool = False) -> None:
        """Check (see `check`), clear our files when `overwrite`, write the fingerprint."""
        from sgone.io import atomic_write

        self.check(overwrite)
        if overwrite:
            for name in ("masks", "overlays", STATE):  # only what sgone label writes
                shutil.rmtree(self.folder / name, ignore_errors=True)
            for name in (INDEX, ANNOTATIONS):
                (self.folder / name).unlink(missing_ok=True)
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            atomic_write(self.state / FINGERPRINT, json.dumps(self.fingerprint, indent=2) + "\n")
            self._journal = open(self.state / JOURNAL, "a", encoding="utf-8")
            if self._journal.tell() and not _ends_with_newline(self.state / JOURNAL):
                self._journal.write("\n")  # a line cut short by a crash stays alone (and is ignored)
        except OSError as exc:
            raise _oserror(self.state, exc) from None

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # ------------------------------------------------------------------ journal
    def records(self) -> Iterator[dict[str, Any]]:
        """Journal lines in order; a line cut short by a crash is ignored."""
        path = self.state / JOURNAL
        if not path.is_file():
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "key" in record:
                    yield record

    def latest(self) -> dict[str, dict[str, Any]]:
        """key -> its last journal record."""
        return {r["key"]: r for r in self.records()}

    def done(self, items: Sequence[Item]) -> set[str]:
        """Keys of `items` finished before (status done, masks on disk): a rerun skips them. Images
        that failed are tried again. The key, not the path typed, identifies an image, so a rerun
        from another folder (`photos/` vs `/data/photos/`) still finds its work."""
        latest = self.latest()
        return {it.key for it in items
                if (r := latest.get(it.key)) is not None and r.get("status") == "done"
                and all(p.is_file() for p in self.mask_paths(it.key))}

    def commit(self, encoded) -> bool:
        """Write one image's files atomically, then its journal line; False for a duplicate
        (an image a retried worker delivered twice is stored once)."""
        from sgone.io import atomic_write

        record = encoded.record
        key = record["key"]
        if key in self._committed:
            return False
        try:
            if record["status"] == "done":
                for path, data in zip(self.mask_paths(key), encoded.masks):
                    atomic_write(path, data)
                if encoded.overlay:
                    atomic_write(self.overlay_path(key), encoded.overlay)
            self._journal.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._journal.flush()  # a crash of this process keeps every finished line
        except OSError as exc:
            raise _oserror(self.folder / "masks" / key, exc) from None
        self._committed.add(key)
        return True

    # ------------------------------------------------------------------ derived files
    def finish(self, items: Sequence[Item]) -> dict[str, int]:
        """Rebuild index.jsonl and annotations.json from the journal (both atomic).

        -> counts {"done", "error", "pending"} over `items`.
        """
        from sgone.io import atomic_write
        from sgone.label.coco import CocoBuilder, write_coco

        latest = self.latest()
        coco = CocoBuilder(self.classes, description=f"sgone label ({self.fingerprint.get('model')})")
        counts = {"done": 0, "error": 0, "pending": 0}
        lines = []
        for it in items:
            record = latest.get(it.key) or {"key": it.key, "file": it.path, "status": "pending"}
            counts[record["status"]] = counts.get(record["status"], 0) + 1
            lines.append(json.dumps(index_line(record, self.classes)))
            if record["status"] == "done":
                image_id = coco.add_image(it.key, record["width"], record["height"])
                for c, result in enumerate(record["classes"], 1):
                    coco.add_encoded(image_id, c, {k: result[k] for k in ("segmentation", "area", "bbox")})
        try:
            atomic_write(self.folder / INDEX, "".join(line + "\n" for line in lines))
        except OSError as exc:
            raise _oserror(self.folder / INDEX, exc) from None
        write_coco(self.folder / ANNOTATIONS, coco.to_dict())
        return counts


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def index_line(record: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """A journal record -> its index.jsonl line (no RLE): what a reviewer sorts by."""
    line = {"path": record["key"], "file": record.get("file"), "status": record["status"],
            "foreground_share": None, "mean_probability": None, "seconds": record.get("seconds"),
            "error": record.get("error")}
    results = record.get("classes") or []
    if record["status"] == "done" and results:
        line["width"], line["height"] = record["width"], record["height"]
        areas = [r["area"] for r in results]
        line["foreground_share"] = round(sum(r["foreground_share"] for r in results), 6)
        weighted = [(r["mean_probability"], a) for r, a in zip(results, areas) if r["mean_probability"] is not None]
        if weighted:
            line["mean_probability"] = round(sum(m * a for m, a in weighted) / sum(a for _, a in weighted), 4)
        if len(classes) > 1:
            line["classes"] = {name: {"foreground_share": r["foreground_share"],
                                      "mean_probability": r["mean_probability"]} for name, r in zip(classes, results)}
    return line


def _difference(before: dict[str, Any], now: dict[str, Any]) -> str:
    """The first thing that differs between two fingerprints, in words."""
    old_model, new_model = before.get("model") or {}, now.get("model") or {}
    if old_model.get("name") != new_model.get("name"):
        return f"another model ({old_model.get('name')}, now {new_model.get('name')})"
    if old_model != new_model:
        return f"another model file ({new_model.get('name')} has changed)"
    if before.get("supports") != now.get("supports"):
        return "another support set (support images, masks or classes differ)"
    old, new = before.get("options") or {}, now.get("options") or {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"another --{key.replace('_', '-')} ({old.get(key)}, now {new.get(key)})"
    return f"another format ({before.get('format')}, now {now.get('format')})"
