"""Predictor: cached support, k-shot, N-way, batches, original resolution, errors."""
import numpy as np
import pytest
import torch

from sgone.errors import SgoneError
from sgone.models.registry import build_model
from sgone.predictor import Predictor


def scene(h, w, boxes, rng):
    """Noisy blue background with red boxes (class 1) and green discs (class 2)."""
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 2] = 140
    image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
    labels = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for cls, (y, x, s) in boxes:
        if cls == 1:
            region = (yy >= y) & (yy < y + s) & (xx >= x) & (xx < x + s)
            image[region] = (230, 30, 30)
        else:
            region = (yy - y) ** 2 + (xx - x) ** 2 < (s / 2) ** 2
            image[region] = (40, 220, 40)
        labels[region] = cls
    return image, labels


@pytest.fixture(scope="module")
def predictor():
    from sgone.backbones.weights import find_weights

    try:
        weights = find_weights("mobilenet_v2", None)
    except SgoneError as exc:
        pytest.skip(f"MobileNetV2 ImageNet weights not installed: {exc}")
    return Predictor(build_model("prototype", "mobilenet_v2", weights=weights), size=96)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_one_shot_original_resolution_and_cache(predictor, monkeypatch):
    rng = np.random.default_rng(0)
    s_img, s_lab = scene(90, 120, [(1, (20, 30, 40))], rng)
    predictor.set_support([s_img], [(s_lab == 1).astype(np.uint8)])
    calls = []
    original = predictor.model.encode
    monkeypatch.setattr(predictor.model, "encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    q_img, q_lab = scene(70, 101, [(1, (10, 50, 35))], rng)
    results = [predictor.predict(q_img) for _ in range(3)]
    assert len(calls) == 3  # one encoding per query, none for the support
    r = results[0]
    assert r.mask.shape == (70, 101) and r.mask.dtype == np.uint8 and set(np.unique(r.mask)) <= {0, 1}
    assert r.probability.shape == (70, 101) and r.similarity.shape == (70, 101)
    assert iou(r.mask == 1, q_lab == 1) > 0.5


def test_batch_equals_single(predictor):
    rng = np.random.default_rng(1)
    s_img, s_lab = scene(64, 64, [(1, (10, 10, 30))], rng)
    predictor.set_support([s_img], [(s_lab == 1).astype(np.uint8)])
    queries = [scene(64, 64, [(1, (20, 25, 30))], rng)[0], scene(50, 80, [(1, (5, 5, 30))], rng)[0],
               scene(64, 64, [(1, (30, 5, 25))], rng)[0]]
    batch = predictor.predict_batch(queries)
    for q, b in zip(queries, batch):
        single = predictor.predict(q)
        assert np.allclose(single.probability, b.probability, atol=1e-4)


def test_k_shot_fusions(predictor):
    rng = np.random.default_rng(2)
    supports = [scene(64, 64, [(1, (y, 10, 30))], rng) for y in (5, 30)]
    q_img, q_lab = scene(64, 64, [(1, (25, 25, 30))], rng)
    for fusion in ("avg", "max", "vote"):
        predictor.fusion = fusion
        predictor.set_support([s[0] for s in supports], [(s[1] == 1).astype(np.uint8) for s in supports])
        assert iou(predictor.predict(q_img).mask == 1, q_lab == 1) > 0.5, fusion
    predictor.fusion = "avg"


def test_n_way_labels(predictor):
    rng = np.random.default_rng(3)
    s1 = scene(160, 160, [(1, (20, 20, 70))], rng)
    s2 = scene(160, 160, [(2, (80, 80, 70))], rng)
    predictor.set_support([[s1[0]], [s2[0]]], [[(s1[1] == 1).astype(np.uint8)], [(s2[1] == 2).astype(np.uint8)]],
                          class_names=["box", "disc"])
    q_img, q_lab = scene(160, 176, [(1, (10, 90, 64)), (2, (115, 45, 64))], rng)
    predictor.size = 160  # objects must span several stride-8 cells
    r = predictor.predict(q_img)
    predictor.size = 96
    assert r.probability.shape == (2, 160, 176) and r.similarity.shape == (2, 160, 176)
    assert iou(r.mask == 1, q_lab == 1) > 0.5 and iou(r.mask == 2, q_lab == 2) > 0.5


def test_update_support_blends_prototype(predictor):
    rng = np.random.default_rng(4)
    s_img, s_lab = scene(64, 64, [(1, (10, 10, 30))], rng)
    predictor.set_support([s_img], [(s_lab == 1).astype(np.uint8)])
    with pytest.raises(SgoneError):
        predictor.update_support(np.ones((64, 64), np.uint8))
    q_img, q_lab = scene(64, 64, [(1, (30, 30, 30))], rng)
    before = {k: v.clone() for k, v in predictor._fused[0].items()}
    predictor.predict(q_img)
    predictor.update_support((q_lab == 1).astype(np.uint8), weight=0.5)
    after = predictor._fused[0]
    assert not torch.allclose(before["vector"], after["vector"])
    # the support's background parts (8 by default) are kept
    assert before["background_set"].shape[1] == 8
    assert torch.equal(before["background_set"], after["background_set"])


def test_support_errors(predictor):
    img = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(SgoneError, match="empty"):
        predictor.set_support([img], [np.zeros((40, 50), np.uint8)])
    with pytest.raises(SgoneError, match="50x40"):
        predictor.set_support([img], [np.ones((30, 30), np.uint8)])
    with pytest.raises(SgoneError, match="number of masks"):
        predictor.set_support([img, img], [np.ones((40, 50), np.uint8)])
    fresh = Predictor(predictor.model, size=64)
    with pytest.raises(SgoneError, match="set_support"):
        fresh.predict(img)
