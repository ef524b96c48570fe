"""examples/onnx_segment.py on a folder from `sgone export` gives the library's masks: the default
model on the bundled sample (torch made unimportable), the training-free model at several query
sizes and 2-shot; and the steps it repeats in numpy (image resize, mask resize, mask files) are
sgone's to the bit."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgone.predictor import Predictor
from tests.export.helpers import run_example_without_torch

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sgone" / "samples"
AGREE = 0.98  # issue 24: the example's mask against the library's, IoU


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("onnx_segment", ROOT / "examples" / "onnx_segment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def samples():
    """The bundled photos as sgone reads them: support, its mask, query, its true mask."""
    from sgone.io import read_image, read_mask

    return (read_image(SAMPLES / "support.jpg"), read_mask(SAMPLES / "support_mask.png"),
            read_image(SAMPLES / "query.jpg"), read_mask(SAMPLES / "query_mask.png"))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _library_mask(model: str, supports, masks, query) -> np.ndarray:
    predictor = Predictor(model)
    predictor.set_support(supports, masks)
    return predictor.predict(query).mask == 1


def test_default_model_on_the_bundled_sample_without_torch(dinov2, tmp_path):
    from sgone.onnx.export import export_model

    folder = tmp_path / "onnx"
    export_model(None, folder)  # what `sgone export` writes by default
    out = tmp_path / "mask.png"
    done = run_example_without_torch(folder, out, "--truth", str(SAMPLES / "query_mask.png"))
    assert done.returncode == 0, done.stderr
    theirs = np.asarray(Image.open(out)) == 255
    ours = _library_mask("sgone-dinov2_s14-mobilenet_v2-real", SAMPLES / "support.jpg",
                         SAMPLES / "support_mask.png", SAMPLES / "query.jpg")
    assert theirs.shape == ours.shape == (375, 250)
    assert ours.any() and _iou(ours, theirs) >= AGREE


@pytest.fixture(scope="module")
def training_free(imagenet, tmp_path_factory, example):
    from sgone.onnx.export import export_model

    folder = tmp_path_factory.mktemp("onnx-prototype")
    export_model("prototype-mobilenet_v2", folder)
    return example.load(folder)


@pytest.mark.parametrize("hw", [(375, 250), (61, 47), (333, 501), (1203, 517)])
def test_training_free_model_agrees_at_any_query_size(training_free, example, samples, hw):
    support, support_mask, query, _ = samples
    query = np.asarray(Image.fromarray(query).resize(hw[::-1], Image.BILINEAR))  # small, odd, wide, large
    manifest, sessions = training_free
    theirs = example.probability(sessions, manifest, example.prototype(sessions, manifest, support, support_mask),
                                 query) > manifest["threshold"]
    ours = _library_mask("prototype-mobilenet_v2", support, support_mask, query)
    assert theirs.shape == ours.shape == hw and ours.any()
    assert _iou(ours, theirs) >= AGREE


def test_two_shot_averages_as_the_library(training_free, example, samples):
    support, support_mask, query, _ = samples
    shots = [(support, support_mask), (query[:, ::-1].copy(), samples[3][:, ::-1].copy())]
    manifest, sessions = training_free
    prototypes = example.average([example.prototype(sessions, manifest, i, m) for i, m in shots])
    theirs = example.probability(sessions, manifest, prototypes, query) > manifest["threshold"]
    ours = _library_mask("prototype-mobilenet_v2", [s[0] for s in shots], [s[1] for s in shots], query)
    assert ours.any() and _iou(ours, theirs) >= AGREE


@pytest.mark.parametrize("seed", range(3))
def test_resizes_are_sgones_to_the_bit(example, seed):
    from sgone.inputs import image_tensor, mask_tensor
    from sgone.upsample import resize_images

    rng = np.random.default_rng(seed)
    for _ in range(4):
        h, w, out_h, out_w = (int(v) for v in rng.integers(3, 700, 4))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = image.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
        ours = image_tensor(image, (out_h, out_w)).numpy()
        assert np.array_equal(example.resize(x, (out_h, out_w)), ours)
        assert np.array_equal(resize_images(x, (out_h, out_w)), ours)
        # within a float32 ulp or two of torch's own kernel
        reference = torch.nn.functional.interpolate(torch.from_numpy(x), size=(out_h, out_w), mode="bilinear",
                                                    align_corners=False, antialias=True).numpy()
        assert np.abs(ours - reference).max() < 3e-7
        mask = rng.choice(np.array([0, 1, 255], dtype=np.uint8), (h, w))
        assert np.array_equal(example.nearest(mask, (out_h, out_w)), mask_tensor(mask, (out_h, out_w))[0].numpy())


def test_mask_files_read_as_sgone_reads_them(example, tmp_path):
    from sgone.io import read_mask

    labels = np.zeros((40, 50), dtype=np.uint8)
    labels[5:20, 5:30], labels[25:35, 10:45], labels[20:25] = 3, 7, 255  # two classes and a VOC border
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0] * 128)
    files = {"palette.png": palette, "ids.png": Image.fromarray(labels),
             "binary.png": Image.fromarray(np.where(labels == 3, 255, 0).astype(np.uint8)),
             "grey.png": Image.fromarray(np.select([labels == 3, labels == 7], [100, 200], 0).astype(np.uint8)),
             "colour.png": Image.fromarray(np.stack([labels, labels * 0, labels * 0], axis=2))}
    for name, image in files.items():
        image.save(tmp_path / name)
        assert np.array_equal(example.read_mask(str(tmp_path / name)), read_mask(tmp_path / name)), name
