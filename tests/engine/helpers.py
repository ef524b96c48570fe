"""Tiny generated data and a tiny model for the engine tests (fast on 2 shared CPU cores).

TinySource: coloured shapes on noise, each class a shape of its own colour; images vary in
size (to exercise scoring at the original label size) and carry a 255 band around every
object (to exercise the ignore rule). TinyBackbone / tiny_model: SG-One on three small convs.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sgone.data.episode import Source

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 200, 30),
           (200, 40, 200), (30, 200, 210), (250, 130, 20), (120, 120, 120)]


class TinySource(Source):
    """8 classes in 2 folds of 4; `per_split` images per class in each of "train" and "val"."""

    name = "tiny"
    folds = 2

    def __init__(self, per_split: int = 6, size: int = 48, seed: int = 0) -> None:
        self.root = "tiny"
        self.class_names = {c: f"shape{c}" for c in range(1, 9)}
        self.size, self.seed, self.per_split = size, seed, per_split

    def classes(self, fold: int, role: str) -> list[int]:
        test = list(range(4 * fold + 1, 4 * fold + 5))
        return test if role == "test" else [c for c in range(1, 9) if c not in test]

    def items(self, split: str, class_id: int) -> list[str]:
        return [f"{split}-{class_id}-{i}" for i in range(self.per_split)]

    def load(self, key: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        split, c, i = key.split("-")
        rng = np.random.default_rng([self.seed, int(c), int(i), 0 if split == "train" else 1])
        h = self.size + int(rng.integers(-8, 9))
        w = self.size + int(rng.integers(-8, 9))
        image = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
        r = int(rng.integers(h // 6, h // 3))
        cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
        yy, xx = np.mgrid[:h, :w]
        dist = np.hypot(yy - cy, xx - cx) if int(c) % 2 else np.maximum(abs(yy - cy), abs(xx - cx))
        inside = dist <= r
        image[inside] = COLOURS[int(c) - 1]
        mask = inside.astype(np.uint8)
        mask[(dist > r) & (dist <= r + 1)] = 255
        if int(c) != class_id:
            mask[mask == 1] = 0
        return image, mask


class TinyBackbone(nn.Module):
    """Three feature levels at stride 8 from a few small convs: the Backbone contract, fast on CPU."""

    channels = (8, 16, 24)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.high = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        low = self.stem(x - 0.5)
        mid = self.mid(low)
        return [low, mid, self.high(mid)]


def tiny_model(seed: int = 0, variant: str = "fixed") -> nn.Module:
    """SG-One over TinyBackbone (random init under `seed`)."""
    from sgone.models.sgone_net import SGOne

    torch.manual_seed(seed)
    return SGOne(TinyBackbone(), variant=variant, guidance_dim=32, side_dim=16, config={"backbone": "tiny"})


class TinySemanticBackbone(nn.Module):
    """TinyBackbone with a "semantic" level first (as `JointBackbone`): [semantic, low, mid, high]."""

    channels = (12, 8, 16, 24)

    def __init__(self) -> None:
        super().__init__()
        self.detail = TinyBackbone()
        self.semantic = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        low, mid, high = self.detail(x)
        return [self.semantic(low), low, mid, high]


class LevelsOf(nn.Module):
    """Three levels picked from another backbone's output (a PrototypeModel reads levels by position)."""

    def __init__(self, net: nn.Module, picks: tuple[int, int, int]) -> None:
        super().__init__()
        self.net, self.picks = net, picks

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = self.net(x)
        return [levels[i] for i in self.picks]
