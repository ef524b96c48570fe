"""Frozen backbone features on disk: computed once per image and input size, memory-mapped.

With the backbone frozen, a training step or an evaluation episode only needs the backbone's
three outputs [low, mid, high] for each image; computing them is most of the cost (MobileNetV2
at 473 px: ~90% of an episode). `FeatureCache` stores them as one float16 `.npy` per image,

    <folder>/<backbone>-<size>-<tag>/<digest[:2]>/<digest>.npy     (C_low + C_mid + C_high, h, w)

where `digest` is the SHA-1 of the image FILE's bytes (a changed image is a new entry) and
`tag` hashes the backbone's name, options and weights (a digest of its state dict), the input
size and the cache format: a cache written by another backbone, weights or size lives in
another folder and is never read. `meta.json` in that folder says what it holds.

Input size as the Predictor: the longer side scaled to `size`, aspect kept
(`sgone.predictor.input_size`), bilinear with antialiasing; so cached features equal what the
Predictor computes for the same image, up to float16 rounding (a test checks this).
Entries are written atomically (temp file + rename); a damaged entry is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sgone.errors import SgoneError
from sgone.backbones.weights import state_digest
from sgone.io import file_digest

FORMAT = 1


class FeatureCache:
    """Backbone outputs per image file at one input size. `levels(path)` -> [(C,h,w)] x 3 float16 memmaps."""

    def __init__(self, folder: str | Path, backbone: nn.Module, size: int, device: str | torch.device = "cpu") -> None:
        if size is None or int(size) < 8:
            raise SgoneError(f"feature cache: the input size must be at least 8 pixels, got {size}")
        self.backbone = backbone.eval()
        self.size = int(size)
        self.device = torch.device(device)
        self.channels = tuple(int(c) for c in backbone.channels)
        identity = {"format": FORMAT, "backbone": getattr(backbone, "name", type(backbone).__name__),
                    "options": getattr(backbone, "options", {}), "weights": state_digest(backbone),
                    "size": self.size, "channels": list(self.channels)}
        self.tag = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        self.dir = Path(folder) / f"{identity['backbone']}-{self.size}-{self.tag}"
        self.identity = identity
        self._digests: dict[tuple[str, int, int], str] = {}
        self._net: nn.Module | None = None

    def _network(self) -> nn.Module:
        """A copy of the backbone with BatchNorm folded in (same function, ~2x faster on CPU)."""
        if self._net is None:
            import copy

            from sgone.backbones.base import fuse_batchnorm
            from sgone.models.inference import CHANNELS_LAST

            self._net = fuse_batchnorm(copy.deepcopy(self.backbone).eval()).to(self.device)
            if self.device.type == "cpu" and self.identity["backbone"] in CHANNELS_LAST:
                self._net.to(memory_format=torch.channels_last)
        return self._net

    def _write_meta(self) -> None:
        from sgone.io import atomic_write

        meta = self.dir / "meta.json"
        if not meta.is_file():
            atomic_write(meta, json.dumps(self.identity, indent=2) + "\n")

    def digest(self, path: str | Path) -> str:
        """The image file's SHA-1, remembered while its size and mtime stay the same."""
        st = os.stat(path)
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self._digests:
            self._digests[key] = file_digest(path)
        return self._digests[key]

    def entry(self, path: str | Path) -> Path:
        d = self.digest(path)
        return self.dir / d[:2] / f"{d}.npy"

    def has(self, path: str | Path) -> bool:
        return self.entry(path).is_file()

    @torch.inference_mode()
    def compute(self, path: str | Path) -> np.ndarray:
        """(C,h,w) float16 features of one image, computed now (nothing is read from or written to disk)."""
        from sgone.io import read_image
        from sgone.inputs import image_tensor, input_size

        image = read_image(path)
        x = image_tensor(image, input_size(image.shape[0], image.shape[1], self.size)).to(self.device)
        levels = self._network()(x)
        return torch.cat([lv[0].float() for lv in levels]).cpu().numpy().astype(np.float16)

    def levels(self, path: str | Path) -> list[np.ndarray]:
        """[(C_low,h,w), (C_mid,h,w), (C_high,h,w)] of the image at `path`: read (memory-mapped) or computed and stored."""
        entry = self.entry(path)
        array = None
        if entry.is_file():
            try:
                array = np.load(entry, mmap_mode="r")
                if array.ndim != 3 or array.shape[0] != sum(self.channels):
                    array = None
            except (OSError, ValueError):
                array = None  # damaged: recomputed below
        if array is None:
            array = self.compute(path)
            self._store(entry, array)
        bounds = np.cumsum((0,) + self.channels)
        return [array[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _store(self, entry: Path, array: np.ndarray) -> None:
        self._write_meta()
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, array)
        os.replace(tmp, entry)

    def fill(self, paths: list[str | Path], progress: bool = True, desc: str = "caching features") -> list[str]:
        """Compute every missing entry; returns one problem line per image that cannot be read (nothing raised)."""
        from tqdm import tqdm

        problems = []
        todo = []
        for p in paths:
            try:
                if not self.has(p):
                    todo.append(p)
            except OSError as exc:
                problems.append(f"{p}: cannot read ({exc.strerror or exc})")
        for p in tqdm(todo, desc=desc, unit="image", disable=not progress, dynamic_ncols=True):
            try:
                self._store(self.entry(p), self.compute(p))
            except SgoneError as exc:
                problems.append(str(exc))
        return problems

    def tensors(self, path: str | Path, device: str | torch.device = "cpu", select: slice = slice(None)) -> list[torch.Tensor]:
        """levels()[select] as float32 tensors (1,C,h,w) on `device` (only the selected levels are converted)."""
        return [torch.from_numpy(np.ascontiguousarray(lv, dtype=np.float32)).unsqueeze(0).to(device)
                for lv in self.levels(path)[select]]


class JointFeatureCache:
    """Several caches of the same images read as one: `tensors(path)` is their levels in turn
    (e.g. DINOv2's three then MobileNetV2's three, for `FusedPrototypeModel.encode_levels`)."""

    def __init__(self, caches: list[FeatureCache]) -> None:
        self.caches = list(caches)

    def fill(self, paths: list[str | Path], progress: bool = True, desc: str = "caching features") -> list[str]:
        problems: list[str] = []
        for cache in self.caches:
            problems += [p for p in cache.fill(paths, progress, f"{desc} ({cache.identity['backbone']})")
                         if p not in problems]
        return problems

    def tensors(self, path: str | Path, device: str | torch.device = "cpu") -> list[torch.Tensor]:
        return [t for cache in self.caches for t in cache.tensors(path, device)]
