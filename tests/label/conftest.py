"""Tiny generated collections for the `sgone label` tests (no downloads).

The training-free `prototype-mobilenet_v2` needs only MobileNetV2's ImageNet file; without it
the tests that run a model skip with that reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MODEL = "prototype-mobilenet_v2"
SIZE = "128"


def scene(h: int, w: int, cy: float, cx: float, r: float, seed: int, colour=(230, 40, 40),
          square: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A coloured disc (and optionally a blue square at (top, left, side)) on a noisy striped background.

    -> (HxWx3 uint8 image, HxW {0,1} disc mask)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([np.sin(x / 3.0 + seed) * 40 + 100, np.cos(y / 4.0) * 40 + 110,
                      (x + y) % 16 * 6 + 60.0], axis=2) + rng.normal(0, 10, (h, w, 3))
    disc = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    image[disc] = colour
    if square is not None:
        top, left, side = square
        image[top:top + side, left:left + side] = (30, 60, 230)
    return np.clip(image, 0, 255).astype(np.uint8), disc.astype(np.uint8)


def model_ready() -> str | None:
    """None when the test model can be built here, else why not."""
    from sgone.backbones.weights import find_weights
    from sgone.errors import SgoneError

    try:
        find_weights("mobilenet_v2", None)
    except SgoneError as exc:
        return f"MobileNetV2 ImageNet weights not installed: {exc}"
    return None


@pytest.fixture(scope="session")
def need_model():
    reason = model_ready()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """support.png + support_mask.png (a red disc), photos/ with 6 queries in two folders."""
    support, disc = scene(64, 80, 30, 36, 16, seed=1)
    Image.fromarray(support).save(tmp_path / "support.png")
    Image.fromarray(disc * 255).save(tmp_path / "support_mask.png")
    for i in range(6):
        folder = tmp_path / "photos" / ("a" if i < 3 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        image, _ = scene(60 + 4 * (i % 2), 88, 30, 30 + 5 * i, 13, seed=10 + i)
        Image.fromarray(image).save(folder / f"q{i}.png")
    return tmp_path


def label_args(root: Path, output: Path, *extra: str, inputs=("photos",)) -> list[str]:
    return ["label", "--support", str(root / "support.png"), "--support-mask", str(root / "support_mask.png"),
            "--input", *[str(root / i) for i in inputs], "--output", str(output), "--model", MODEL, "--size", SIZE,
            "--quiet", *extra]


def journal(output: Path) -> list[dict]:
    """The journal's complete lines (a line cut short by a crash is skipped, as sgone does)."""
    path = output / ".sgone-label" / "results.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def index(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "index.jsonl").read_text().splitlines()]
