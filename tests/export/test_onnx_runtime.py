"""Predictor(runtime="onnx"): the same outputs as PyTorch on real photos, the same support caching."""
from __future__ import annotations

import copy
import importlib.util
import sys

import numpy as np
import pytest

from sgone.errors import SgoneError
from sgone.predictor import Predictor

SIZE = 129


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def pair(imagenet):
    return {rt: Predictor("prototype-mobilenet_v2", size=SIZE, runtime=rt) for rt in ("torch", "onnx")}


def _agree(a, b, atol=1e-4):
    assert a.mask.shape == b.mask.shape
    assert np.abs(a.probability - b.probability).max() < atol
    assert np.abs(a.similarity - b.similarity).max() < atol
    assert iou(a.mask >= 1, b.mask >= 1) > 0.99


def test_one_shot_on_the_bundled_photos_matches_pytorch(pair, samples):
    support, mask, query, truth = samples
    results = {}
    for rt, p in pair.items():
        p.set_support(support, mask)
        results[rt] = p.predict(query)
    _agree(results["torch"], results["onnx"])
    assert iou(results["onnx"].mask == 1, truth == 1) > 0.2  # it finds persons (0.30 at this small size)
    assert "runtime='onnx'" in repr(pair["onnx"]) and "runtime" not in repr(pair["torch"])


@pytest.mark.parametrize("fusion", ["avg", "max", "vote"])
def test_k_shot_fusions_match_pytorch(pair, samples, fusion):
    support, mask, query, _ = samples
    flipped = (np.ascontiguousarray(query[:, ::-1]), np.ascontiguousarray(samples[3][:, ::-1]))
    results = []
    for shared in pair.values():
        p = copy.copy(shared)  # the same model and runtime; the module's predictors stay as they are
        p.fusion = fusion
        p.set_support([support, flipped[0]], [mask, flipped[1]])
        results.append(p.predict(query))
    _agree(*results)


def test_support_is_encoded_once_and_batches_of_sizes_match(pair, samples, monkeypatch):
    support, mask, query, _ = samples
    onnx = pair["onnx"]
    onnx.set_support(support, mask)
    calls = []
    original = onnx.model.encode
    monkeypatch.setattr(onnx.model, "encode", lambda *a, **k: calls.append(a[0].shape[0]) or original(*a, **k))
    queries = [query, query[:200], query[::-1].copy(), support]
    got = onnx.predict_batch(queries)
    assert sum(calls) == len(queries)  # one encoding per query, none for the cached support
    pair["torch"].set_support(support, mask)
    for a, b in zip(pair["torch"].predict_batch(queries), got):
        _agree(a, b)


def test_two_way_and_online_update_match_pytorch(pair, samples):
    support, mask, query, truth = samples
    background = (mask == 0).astype(np.uint8)
    results = []
    for p in pair.values():
        p.set_support([[support], [support]], [[mask], [background]], class_names=["person", "rest"])
        labels = p.predict(query).mask
        p.set_support(support, mask)
        p.predict(query)
        p.update_support(truth, weight=0.3)  # what the video's propagate mode does
        results.append((labels, p.predict(query)))
    assert iou(results[0][0] == 1, results[1][0] == 1) > 0.99 and iou(results[0][0] == 2, results[1][0] == 2) > 0.99
    _agree(results[0][1], results[1][1])


def test_shipped_checkpoint_from_an_exported_folder(imagenet, samples, tmp_path):
    from sgone.onnx.export import export_model

    export_model("sgone-mobilenet_v2-real", tmp_path, size=SIZE, dynamic=True)
    support, mask, query, _ = samples
    results = []
    for p in (Predictor("sgone-mobilenet_v2-real", size=SIZE), Predictor(tmp_path, size=SIZE, runtime="onnx")):
        p.set_support(support, mask)
        results.append(p.predict(query))
    _agree(*results)


def test_bad_runtime_settings_fail_clearly(imagenet, tmp_path):
    from sgone.onnx.export import export_model

    with pytest.raises(SgoneError, match="tpu: unknown runtime"):
        Predictor(runtime="tpu")
    export_model("prototype-mobilenet_v2", tmp_path / "fixed", size=97, dynamic=False)
    with pytest.raises(SgoneError, match="fixed input size; export with --dynamic"):
        Predictor(tmp_path / "fixed", runtime="onnx")
    with pytest.raises(SgoneError, match="an exported ONNX model; run it with runtime='onnx'"):
        Predictor(tmp_path / "fixed", runtime="torch")
    with pytest.raises(SgoneError, match="fixed input size; export with --dynamic"):
        Predictor(tmp_path / "fixed")  # auto: the exported folder goes to openvino, else onnx
    (tmp_path / "empty").mkdir()
    with pytest.raises(SgoneError, match=r"manifest.json: not found"):
        Predictor(tmp_path / "empty", runtime="onnx")
    (tmp_path / "fixed" / "head.onnx").unlink()
    with pytest.raises(SgoneError, match=r"head.onnx: the head graph named by .* is missing"):
        Predictor(tmp_path / "fixed", runtime="onnx")


def test_without_onnxruntime_one_line_says_how_to_install(monkeypatch):
    from sgone.models import registry

    # the message comes before any model is loaded
    monkeypatch.setattr(registry, "load_model", lambda *a, **k: pytest.fail("model loaded first"))
    if importlib.util.find_spec("onnxruntime") is not None:  # ONNX Runtime without the onnx package
        monkeypatch.setitem(sys.modules, "onnx", None)
        with pytest.raises(SgoneError, match=r"^the onnx package is not installed \(a dependency of sgone\); reinstall sgone or: pip install onnx$"):
            Predictor(runtime="onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    hint = r"^ONNX Runtime is not installed \(a dependency of sgone\); reinstall sgone or: pip install onnxruntime onnx$"
    with pytest.raises(SgoneError, match=hint):
        Predictor(runtime="onnx")
