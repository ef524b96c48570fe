"""`sgone segment --fusion/--threshold` reach the real Predictor and change its masks as the API does."""
from __future__ import annotations

from importlib import resources

import numpy as np
from PIL import Image

import sgone.predictor
from sgone.cli import main
from sgone.io import read_image, read_mask


def test_fusion_and_threshold_reach_the_real_predictor(tmp_path, monkeypatch):
    samples = resources.files("sgone") / "samples"
    flipped_image, flipped_mask = tmp_path / "flip.png", tmp_path / "flip_mask.png"
    Image.fromarray(read_image(samples / "support.jpg")[:, ::-1]).save(flipped_image)
    Image.fromarray(read_mask(samples / "support_mask.png")[:, ::-1] * 255).save(flipped_mask)
    seen = {}
    real = sgone.predictor.Predictor

    class Recording(real):
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sgone.predictor, "Predictor", Recording)
    out = tmp_path / "out"
    assert main(["segment", "--support", str(samples / "support.jpg"), "--support-mask", str(samples / "support_mask.png"),
                 "--support", str(flipped_image), "--support-mask", str(flipped_mask),
                 "--input", str(samples / "query.jpg"), "--fusion", "max", "--threshold", "0.7",
                 "--output", str(out), "--device", "cpu"]) == 0
    assert seen["fusion"] == "max" and seen["threshold"] == 0.7
    written = np.asarray(Image.open(out / "query.png")) > 0
    direct = real(fusion="max", threshold=0.7, device="cpu")
    direct.set_support([samples / "support.jpg", flipped_image], [samples / "support_mask.png", flipped_mask])
    expected = direct.predict(samples / "query.jpg").mask.astype(bool)
    assert (written == expected).mean() > 0.999
    loose = real(fusion="max", threshold=0.3, device="cpu")
    loose.set_support([samples / "support.jpg", flipped_image], [samples / "support_mask.png", flipped_mask])
    assert loose.predict(samples / "query.jpg").mask.sum() > expected.sum()  # the threshold matters
