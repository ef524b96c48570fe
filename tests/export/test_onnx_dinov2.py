"""Export of the SG-One head trained on DINOv2 + MobileNetV2 (`sgone-dinov2_s14-mobilenet_v2-real`):
DINOv2's file travels with the graphs, its patch map is made outside them, and three runtimes agree."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sgone.errors import SgoneError
from tests.export.helpers import run_example_without_torch

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sgone" / "samples"
NAME = "sgone-dinov2_s14-mobilenet_v2-real"
SIZE = 473  # the default input size


@pytest.fixture(scope="module")
def exported(dinov2, tmp_path_factory):
    from sgone.onnx.export import export_model

    out = tmp_path_factory.mktemp("onnx-dinov2")
    export_model(NAME, out, size=SIZE, dynamic=True)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_manifest_names_the_dinov2_file_and_how_to_feed_it(exported):
    from sgone.backbones.weights import find_weights
    from sgone.io import file_digest

    info = json.loads((exported / "manifest.json").read_text())
    assert info["files"]["dinov2"] == "dinov2.onnx" and (exported / "dinov2.onnx").is_file()
    assert info["spec"]["inputs"] == ["image", "semantic"]
    semantic = info["semantic"]
    assert (semantic["resolution"], semantic["tile"], semantic["tile_stride"], semantic["patch"]) == (448, 224, 112, 14)
    assert semantic["source_sha1"] == file_digest(find_weights("dinov2_s14", None), "sha1")
    assert info["check"]["mask_iou"] > 0.99 and info["check"]["max_abs_diff_probability"] < 1e-3


def test_predictor_from_the_folder_matches_pytorch_one_and_two_shot(exported, samples):
    from sgone.predictor import Predictor

    support, support_mask, query, _ = samples
    flipped, flipped_mask = support[:, ::-1].copy(), support_mask[:, ::-1].copy()
    for shots in ([support], [support, flipped]):
        shots_masks = [support_mask, flipped_mask][:len(shots)]
        results = []
        for predictor in (Predictor(NAME, size=SIZE), Predictor(exported, size=SIZE, runtime="onnx")):
            predictor.set_support(shots, shots_masks)
            results.append(predictor.predict(query))
        assert np.abs(results[0].probability - results[1].probability).max() < 1e-3
        assert _iou(results[0].mask == 1, results[1].mask == 1) > 0.99


def test_example_script_runs_dinov2_without_torch(exported, tmp_path):
    """examples/onnx_segment.py makes DINOv2's patch map itself (numpy), as sgone's ONNX runtime does."""
    from sgone.predictor import Predictor

    out = tmp_path / "mask.png"
    done = run_example_without_torch(exported, out)
    assert done.returncode == 0, done.stderr
    from PIL import Image

    mask = np.asarray(Image.open(out)) == 255
    predictor = Predictor(exported, size=SIZE, runtime="onnx")
    predictor.set_support(SAMPLES / "support.jpg", SAMPLES / "support_mask.png")
    ours = predictor.predict(SAMPLES / "query.jpg").mask == 1
    assert ours.any() and _iou(ours, mask) > 0.98  # against the torch runtime: tests/examples


def test_semantic_map_of_the_example_equals_sgones(exported, samples):
    """Same input array: the example's resize, tiling and stitching give sgone's map to the bit."""
    import runpy

    import onnxruntime as ort
    import torch

    from sgone.onnx.semantic import semantic_encoder
    from sgone.inputs import image_tensor

    example = runpy.run_path(str(ROOT / "examples" / "onnx_segment.py"))
    info = json.loads((exported / "manifest.json").read_text())["semantic"]
    session = ort.InferenceSession(str(exported / "dinov2.onnx"), providers=["CPUExecutionProvider"])
    # 473 x 315 (the canvas 448 x 294: 6 tiles) and 224 x 448 (the canvas is the image, 3 tiles)
    for hw, grid in (((473, 315), (32, 21)), ((224, 448), (16, 32))):
        image = image_tensor(samples[2], hw)
        theirs = example["semantic_map"]({"dinov2": session}, info, image.numpy())
        ours = semantic_encoder(info, session)(image)[0]
        assert theirs.shape == tuple(ours.shape) == (1, 384, *grid)
        assert torch.equal(torch.from_numpy(theirs), ours)


def test_int8_and_training_free_dinov2_models_are_refused(dinov2, tmp_path):
    from sgone.onnx.export import export_model

    with pytest.raises(SgoneError, match="--quantize int8: not offered for DINOv2 models"):
        export_model(NAME, tmp_path / "int8", size=SIZE, quantize="int8")
    with pytest.raises(SgoneError, match="backbone not supported by the ONNX export"):
        export_model("prototype-dinov2_s14-mobilenet_v2", tmp_path / "fused", size=SIZE)
    assert not (tmp_path / "int8").exists() and not (tmp_path / "fused").exists()
