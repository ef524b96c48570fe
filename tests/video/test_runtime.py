"""`sgone video --runtime onnx`: every mode runs on ONNX Runtime and gives the PyTorch masks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sgone.cli import main


@pytest.fixture
def clip(tmp_path):
    from importlib import resources

    samples = resources.files("sgone") / "samples"
    photo = np.asarray(Image.open(samples / "support.jpg").convert("RGB").resize((160, 120)))
    mask = np.asarray(Image.open(samples / "support_mask.png").convert("L").resize((160, 120), Image.NEAREST))
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(4):
        Image.fromarray(np.roll(photo, -4 * t, axis=1)).save(frames / f"{t:05d}.png")
    Image.fromarray(((mask > 0) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    return frames, tmp_path / "mask.png"


def _masks(folder):
    return [np.asarray(Image.open(p)) > 0 for p in sorted((folder / "masks").glob("*.png"))]


@pytest.mark.parametrize("mode", ["temporal", "independent", "propagate"])
def test_onnx_runtime_video_matches_torch(clip, tmp_path, mode, ort, imagenet):
    frames, mask = clip
    outputs = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"out-{runtime}"
        assert main(["video", "--input", str(frames), "--support-mask", str(mask), "--output", str(out), "--mode", mode,
                     "--runtime", runtime, "--size", "97", "--preview", "none", "--no-video", "--quiet",
                     "--threads", "1"]) == 0
        outputs[runtime] = _masks(out)
    assert len(outputs["torch"]) == len(outputs["onnx"]) == 4
    for a, b in zip(outputs["torch"], outputs["onnx"]):
        assert a.any()
        assert (a & b).sum() / (a | b).sum() > 0.99  # fp32 graphs: identical up to rounding at the threshold
