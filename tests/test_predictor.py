"""Predictor: cached support, k-shot, N-way, batches, original resolution, inputs, errors."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sgone.errors import SgoneError
from sgone.models.registry import build_model
from sgone.predictor import Predictor
from tests.helpers import mobilenet_weights


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
def model():
    """The training-free MobileNetV2 model, folded for inference once and shared (never changed)."""
    from sgone.models.inference import prepare_for_inference

    return prepare_for_inference(build_model("prototype", "mobilenet_v2", weights=mobilenet_weights()))


@pytest.fixture
def predictor(model):
    """A fresh Predictor on the shared model. The protocol on its own: the boundary step follows
    grey-level edges, and these scenes' red and green have the same grey level
    (test_boundary_step_* below test that step)."""
    return Predictor(model, size=96, fuse=False, boundary="none")


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
        p = sharing(predictor, fusion=fusion)
        p.set_support([s[0] for s in supports], [(s[1] == 1).astype(np.uint8) for s in supports])
        assert iou(p.predict(q_img).mask == 1, q_lab == 1) > 0.5, fusion


def test_n_way_labels(predictor):
    rng = np.random.default_rng(3)
    s1 = scene(160, 160, [(1, (20, 20, 70))], rng)
    s2 = scene(160, 160, [(2, (80, 80, 70))], rng)
    p = sharing(predictor, size=96)
    p.set_support([[s1[0]], [s2[0]]], [[(s1[1] == 1).astype(np.uint8)], [(s2[1] == 2).astype(np.uint8)]],
                  class_names=["box", "disc"])
    q_img, q_lab = scene(160, 176, [(1, (10, 90, 64)), (2, (115, 45, 64))], rng)
    p.size = 160  # objects must span several stride-8 cells (the support was encoded at 96)
    r = p.predict(q_img)
    assert r.probability.shape == (2, 160, 176) and r.similarity.shape == (2, 160, 176)
    assert iou(r.mask == 1, q_lab == 1) > 0.5 and iou(r.mask == 2, q_lab == 2) > 0.5


def test_update_support_blends_prototype(predictor):
    rng = np.random.default_rng(4)
    s_img, s_lab = scene(64, 64, [(1, (10, 10, 30))], rng)
    predictor.set_support([s_img], [(s_lab == 1).astype(np.uint8)])
    with pytest.raises(SgoneError):
        predictor.update_support(np.ones((64, 64), np.uint8))
    q_img, q_lab = scene(64, 64, [(1, (30, 30, 30))], rng)
    before = {k: v.clone() for k, v in predictor._shots[0][0].items()}
    predictor.predict(q_img)
    predictor.update_support((q_lab == 1).astype(np.uint8), weight=0.5)
    after = predictor._shots[0][0]
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


def sharing(predictor, **options):
    """A fresh Predictor on the fixture's (already folded) model."""
    return Predictor(predictor.model, size=options.pop("size", 96), fuse=False, **options)


class TableModel(torch.nn.Module):
    """Shot k (a support image filled with the value k) predicts the hand-made probabilities table[k]."""

    def __init__(self, table):
        super().__init__()
        self.table = table  # (K,H,W)
        self.config = {"backbone": "none"}

    def encode(self, images, need_side=True):
        return {"x": images}

    def support_prototype(self, encoded, masks):
        return {"vector": encoded["x"][:, 0, 0, :1] * 255}  # (B,1): the shot id

    @staticmethod
    def fuse_prototypes(protos):
        return {"vector": torch.stack([p["vector"] for p in protos]).mean(0)}

    def segment(self, encoded, proto):
        p = self.table[proto["vector"][:, 0].round().long()]  # (B,H,W)
        return {"logits": torch.stack([torch.zeros_like(p), torch.logit(p)], dim=1), "similarity": p}


@pytest.mark.parametrize("fusion, threshold, expected", [
    ("max", 0.5, {2: [1, 1, 1, 0], 3: [1, 1, 1, 1]}),
    # votes above 0.5: 2 shots 2,1,1,0 -> a single vote is half the top vote: kept (not the intersection);
    # 3 shots 3,1,2,1 -> at least 2 of 3
    ("vote", 0.5, {2: [1, 1, 1, 0], 3: [1, 0, 1, 0]}),
    ("max", 0.85, {2: [1, 1, 0, 0], 3: [1, 1, 0, 1]}),
    # the threshold is each shot's vote: above 0.85 only shot 1 votes (pixels 1-2) and shot 3 (pixel 4)
    ("vote", 0.85, {2: [1, 1, 0, 0], 3: [1, 1, 0, 1]}),
])
@pytest.mark.filterwarnings("ignore::sgone.errors.SgoneWarning")  # hand-made 1x4 images, tiny on purpose
def test_fusion_rules_with_2_and_3_shots_on_hand_made_probabilities(fusion, threshold, expected):
    table = torch.tensor([[[0.9, 0.9, 0.2, 0.2]], [[0.8, 0.3, 0.6, 0.1]], [[0.7, 0.1, 0.7, 0.9]]])
    for k in (2, 3):
        p = Predictor(TableModel(table), size=None, fuse=False, fusion=fusion, threshold=threshold, boundary="none")
        p.set_support([np.full((1, 4, 3), shot, np.uint8) for shot in range(k)], [np.ones((1, 4), np.uint8)] * k)
        r = p.predict(np.zeros((1, 4, 3), np.uint8))
        assert r.mask[0].tolist() == expected[k], (fusion, threshold, k)
        assert r.similarity[0].tolist() == pytest.approx(table[:k, 0].mean(0).tolist())  # mean over shots
        # N-way: the same way twice labels the kept pixels 1 (ties go to the first way)
        p.set_support([[np.full((1, 4, 3), s, np.uint8) for s in range(k)]] * 2, [[np.ones((1, 4), np.uint8)] * k] * 2)
        assert p.predict(np.zeros((1, 4, 3), np.uint8)).mask[0].tolist() == expected[k]


def test_update_support_learns_from_the_last_image_of_a_mixed_size_batch(predictor):
    rng = np.random.default_rng(5)
    s_img, s_lab = scene(64, 64, [(1, (10, 10, 30))], rng)
    a, b = scene(64, 64, [(1, (5, 30, 25))], rng)[0], scene(50, 80, [(2, (25, 40, 30))], rng)[0]
    c, c_lab = scene(64, 64, [(1, (30, 30, 30))], rng)
    c_mask = (c_lab == 1).astype(np.uint8)
    batched, alone = sharing(predictor), sharing(predictor)
    for p in (batched, alone):
        p.set_support([s_img], [(s_lab == 1).astype(np.uint8)])
    batched.predict_batch([a, b, c])  # groups: 64x64 (a, c) then 50x80 (b); c is the last image
    alone.predict(c)
    for p in (batched, alone):
        p.update_support(c_mask, weight=0.5)
    assert torch.allclose(batched._shots[0][0]["vector"], alone._shots[0][0]["vector"], atol=1e-4)


def test_update_support_keeps_the_k_shots(predictor):
    rng = np.random.default_rng(6)
    supports = [scene(64, 64, [(1, (y, 10, 30))], rng) for y in (5, 30)]
    q_img, q_lab = scene(64, 64, [(1, (25, 25, 30))], rng)
    q2 = scene(64, 64, [(1, (10, 20, 30))], rng)[0]
    probs = {}
    for fusion in ("avg", "max"):
        p = sharing(predictor, fusion=fusion)
        p.set_support([s[0] for s in supports], [(s[1] == 1).astype(np.uint8) for s in supports])
        before = [shot["vector"].clone() for shot in p._shots[0]]
        p.predict(q_img)
        p.update_support((q_lab == 1).astype(np.uint8), weight=0.5)
        assert len(p._shots[0]) == 2 and all(not torch.allclose(v, s["vector"]) for v, s in zip(before, p._shots[0]))
        probs[fusion] = p.predict(q2).probability
    # collapsing the shots into one would make max (and vote) the same as avg
    assert np.abs(probs["max"] - probs["avg"]).max() > 1e-3


def test_ignore_pixels_count_as_neither_object_nor_background(predictor):
    rng = np.random.default_rng(7)
    image, labels = scene(80, 80, [(1, (8, 8, 30)), (2, (55, 55, 30))], rng)
    box = (labels == 1).astype(np.uint8)
    masks = {"ignore": np.where(labels == 2, 255, box).astype(np.uint8),  # {0,1,255}: the disc is ignored
             "background": box, "object": (labels > 0).astype(np.uint8), "0/255": box * 255}
    p, protos = sharing(predictor), {}
    for name, mask in masks.items():
        p.set_support([image], [mask])
        protos[name] = p._shots[0][0]
    ign = protos["ignore"]
    assert torch.allclose(ign["vector"], protos["background"]["vector"], atol=1e-6)
    assert torch.allclose(ign["background"], protos["object"]["background"], atol=1e-6)
    assert torch.allclose(ign["background_set"], protos["object"]["background_set"], atol=1e-6)
    assert not torch.allclose(ign["vector"], protos["object"]["vector"], atol=1e-3)
    assert not torch.allclose(ign["background"], protos["background"]["background"], atol=1e-3)
    # a 0/255 array (as read from a PNG) is object/background, 255 = object
    assert torch.allclose(protos["0/255"]["vector"], protos["background"]["vector"], atol=1e-6)


def test_paths_pil_grey_and_unwrapped_inputs_match_arrays(predictor, tmp_path):
    rng = np.random.default_rng(8)
    s_img, s_lab = scene(60, 70, [(1, (10, 10, 30))], rng)
    q_img = scene(60, 70, [(1, (20, 30, 30))], rng)[0]
    Image.fromarray(s_img).save(tmp_path / "s.png")
    Image.fromarray(((s_lab == 1) * 255).astype(np.uint8)).save(tmp_path / "s_mask.png")  # 0/255 PNG
    Image.fromarray(q_img).save(tmp_path / "q.png")
    p = sharing(predictor, size=64)
    p.set_support([s_img], [(s_lab == 1).astype(np.uint8)])
    reference = p.predict(q_img).probability
    for support, mask, query in [(tmp_path / "s.png", str(tmp_path / "s_mask.png"), str(tmp_path / "q.png")),
                                 (Image.fromarray(s_img), Image.fromarray(((s_lab == 1) * 255).astype(np.uint8)),
                                  Image.fromarray(q_img)),
                                 ([s_img], (s_lab == 1), [q_img])]:
        p.set_support(support, mask)
        query_result = p.predict_batch(query)[0] if isinstance(query, list) else p.predict(query)
        assert np.allclose(query_result.probability, reference, atol=1e-5)
    grey = q_img.mean(axis=2).astype(np.uint8)
    assert np.array_equal(p.predict(grey).probability, p.predict(np.repeat(grey[:, :, None], 3, axis=2)).probability)


def test_one_mask_rule_for_arrays_and_files(tmp_path):
    """The API reads an array mask as the CLI reads the same values from a file (non-zero = object,
    255 = ignore, an exact 0/255 mask: 255 = object)."""
    from sgone.inputs import check_mask
    from sgone.io import read_mask

    half = np.where(np.arange(50) < 25, 0, 1).astype(np.uint8)[None].repeat(40, 0)
    edge = half.copy()
    edge[:, 24:26] = 255
    for values, expected in [(half * 7, half), (half * 255, half), (edge * 1 + (edge == 1) * 6, edge)]:
        Image.fromarray(values.astype(np.uint8)).save(tmp_path / "m.png")
        assert np.array_equal(check_mask(values.astype(np.uint8), "m"), expected)
        assert np.array_equal(read_mask(tmp_path / "m.png"), expected)


def test_bad_masks_and_files_name_the_problem(predictor, tmp_path):
    p = sharing(predictor, size=64)
    img = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(SgoneError, match="support 1: a RGB PIL mask"):
        p.set_support(img, Image.new("RGB", (50, 40)))
    with pytest.raises(SgoneError, match="missing.png: file not found"):
        p.set_support(img, tmp_path / "missing.png")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(SgoneError, match="empty.png: the mask is empty"):
        p.set_support(img, tmp_path / "empty.png")
    box = np.zeros((40, 50), np.uint8)
    box[10:30, 10:40] = 1
    p.set_support(img, box)
    with pytest.raises(SgoneError, match="query 1: expected an HxWx3 or HxW uint8 image"):
        p.predict(np.zeros((4, 4, 3), np.float32))


def test_repr_names_model_device_size_and_shots(predictor):
    p = sharing(predictor, fusion="vote")
    assert repr(p) == ("Predictor(model='PrototypeModel(mobilenet_v2)', device='cpu', size=96, "
                       "fusion='vote', threshold=0.5, support=[none])")
    rng = np.random.default_rng(9)
    s = scene(64, 64, [(1, (10, 10, 30))], rng)
    m = (s[1] == 1).astype(np.uint8)
    p.set_support([[s[0], s[0]], [s[0]]], [[m, m], [m]], class_names=["cat", "dog"])
    assert repr(p).endswith("support=[cat: 2 shots, dog: 1 shot])")


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "sgone"])
def test_prepare_for_inference_equals_the_plain_model(backbone):
    if backbone == "mobilenet_v2":
        plain = build_model("prototype", "mobilenet_v2", weights=mobilenet_weights())
    else:  # the SG-One head's BatchNorm layers too, with non-trivial running statistics
        torch.manual_seed(0)
        plain = build_model("sgone", "mobilenet_v2", weights=None)
        for m in plain.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
    rng = np.random.default_rng(10)
    s_img, s_lab = scene(64, 72, [(1, (10, 10, 30))], rng)
    queries = [scene(64, 72, [(1, (20, 30, 30))], rng)[0], scene(48, 40, [(1, (5, 5, 25))], rng)[0]]
    results = []
    for fuse in (False, True):
        p = Predictor(plain, size=64, fuse=fuse)
        p.set_support([s_img], [(s_lab == 1).astype(np.uint8)])
        results.append(p.predict_batch(queries))
    bn = lambda model: sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert bn(p.model) == 0 < bn(plain)  # folded in the copy; the caller's model keeps its layers
    for a, b in zip(*results):
        assert np.abs(a.probability - b.probability).max() < 1e-5
        assert np.array_equal(a.mask, b.mask)


def test_import_is_light_and_python_m_sgone_runs_the_cli():
    code = ("import sys, sgone; assert 'torch' not in sys.modules, 'import sgone pulled in torch'; "
            "from sgone import Predictor, Prediction; assert Predictor.__module__ == 'sgone.predictor'")
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "sgone", "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: sgone") and "segment" in out.stdout


def test_boundary_step_follows_the_images_edges_and_none_is_bilinear(predictor):
    from sgone.boundary import refine_probability

    def bright_box(h, w, y, x, size, rng):  # a photo-like edge: a bright object on a dark, noisy ground
        image = rng.integers(0, 40, (h, w, 3)).astype(np.uint8)
        image[y:y + size, x:x + size] = (240, 230, 220)
        labels = np.zeros((h, w), np.uint8)
        labels[y:y + size, x:x + size] = 1
        return image, labels

    rng = np.random.default_rng(5)
    s_img, s_lab = bright_box(96, 96, 20, 20, 40, rng)
    q_img, q_lab = bright_box(120, 136, 30, 50, 50, rng)
    guided = Predictor(predictor.model, size=96, fuse=False, boundary="guided")
    for p in (predictor, guided):
        p.set_support(s_img, s_lab)
    plain, sharp = predictor.predict(q_img), guided.predict(q_img)
    assert sharp.probability.min() >= 0 and sharp.probability.max() <= 1
    truth = q_lab == 1
    # bilinear upsampling from the stride-8 grid blurs the box's corners; the guided step puts them back
    assert iou(sharp.mask == 1, truth) > iou(plain.mask == 1, truth) + 0.1
    refined = refine_probability(torch.from_numpy(plain.probability)[None], q_img, 96)[0].numpy()
    np.testing.assert_allclose(sharp.probability, refined, atol=1e-6)
    with pytest.raises(SgoneError, match="unknown boundary step"):
        Predictor(predictor.model, boundary="crf")
    with pytest.raises(ValueError, match="differ in size"):
        refine_probability(torch.zeros(1, 10, 10), np.zeros((12, 10, 3), np.uint8), 96)


def test_boundary_step_takes_the_models_filter_window(predictor, monkeypatch):
    from types import SimpleNamespace

    from sgone import boundary, predictor as predictor_module

    # a model with a DINOv2 part takes the finer pair: a torch model's backbone (JointBackbone.semantic,
    # tests/backbones/test_joint.py) or an exported model's session (OnnxModel.semantic, None without one)
    fine, coarse = (boundary.SEMANTIC_BOUNDARY_RADIUS, boundary.SEMANTIC_BOUNDARY_EPS), \
        (boundary.BOUNDARY_RADIUS, boundary.BOUNDARY_EPS)
    assert boundary.boundary_settings(SimpleNamespace(backbone=SimpleNamespace(semantic=object()))) == fine
    assert boundary.boundary_settings(SimpleNamespace(semantic=object())) == fine
    assert boundary.boundary_settings(SimpleNamespace(semantic=None)) == coarse
    assert boundary.boundary_settings(predictor.model) == coarse
    assert boundary.SEMANTIC_BOUNDARY_RADIUS < boundary.BOUNDARY_RADIUS
    # the Predictor filters with what boundary_settings gives for its model
    rng = np.random.default_rng(2)
    s_img, q_img = rng.integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
    s_mask = np.zeros((96, 96), np.uint8)
    s_mask[30:70, 20:60] = 1
    plain = Predictor(predictor.model, size=96, fuse=False)
    plain.set_support(s_img, s_mask)
    first = torch.from_numpy(plain.predict(q_img).probability)[None]
    monkeypatch.setattr(predictor_module, "boundary_settings", lambda model: (0.5, 0.001))
    guided = Predictor(predictor.model, size=96, fuse=False, boundary="guided")
    guided.set_support(s_img, s_mask)
    expected = boundary.refine_probability(first, q_img, 96, 0.5, 0.001)[0].numpy()
    np.testing.assert_allclose(guided.predict(q_img).probability, expected, atol=1e-6)
    assert not np.allclose(expected, boundary.refine_probability(first, q_img, 96)[0].numpy(), atol=1e-3)


def test_video_predictor_keeps_bilinear_upsampling(predictor):
    from sgone.video.model import video_predictor

    assert video_predictor(predictor.model, device="cpu").boundary == "none"
    assert video_predictor(predictor.model, device="cpu", boundary="guided").boundary == "guided"


def test_every_name_and_weights_take_the_runtime_road(monkeypatch):
    """Predictor(name, weights=PATH) and Predictor() load through `load_model`, named as given (the
    default by its own name, as summaries record it)."""
    import torch

    from sgone.models import registry
    from sgone.options import DEFAULT_MODEL

    calls = []

    def fake_load_model(name, device="cpu", weights="auto", **_):
        calls.append((name, weights))
        return torch.nn.Identity()

    monkeypatch.setattr(registry, "load_model", fake_load_model)
    named = Predictor("prototype-resnet50", weights="resnet50.pth")
    default = Predictor()
    assert calls == [("prototype-resnet50", "resnet50.pth"), (None, "auto")]
    assert (named.model_name, default.model_name) == ("prototype-resnet50", DEFAULT_MODEL)


def test_a_tiny_query_is_segmented_with_a_one_line_warning(predictor, tmp_path):
    from sgone.errors import SgoneWarning

    p = sharing(predictor, size=64)
    img = np.zeros((40, 50, 3), np.uint8)
    box = np.zeros((40, 50), np.uint8)
    box[10:30, 10:40] = 1
    p.set_support(img, box)
    Image.fromarray(np.zeros((12, 30, 3), np.uint8)).save(tmp_path / "thin.png")
    with pytest.warns(SgoneWarning, match=r"thin.png: 30x12 pixels is tiny") as caught:
        assert p.predict(tmp_path / "thin.png").mask.shape == (12, 30)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SgoneWarning)
        p.predict(np.zeros((16, 16, 3), np.uint8))  # 16 px a side is not tiny


def test_zoom_finds_a_small_square_at_its_place_in_a_big_image():
    """A 96-px network input sees a 120-px square of a 1600-px photo as about one cell; the zoom step
    crops the region it found, reads it again at 96 px and pastes the answer back on the square."""
    from sgone.models.prototype import PrototypeModel
    from tests.test_self_support import Colours

    support = np.zeros((96, 96, 3), np.uint8)
    support[..., 2] = 140
    support[32:64, 32:64] = (230, 30, 30)
    image = np.zeros((1200, 1600, 3), np.uint8)
    image[..., 2] = 140
    image[700:820, 1100:1220] = (230, 30, 30)
    truth = image[..., 0] == 230
    model = PrototypeModel(Colours()).eval()
    plain, zoomed = (Predictor(model, size=96, fuse=False, zoom=on) for on in (False, True))
    for p in (plain, zoomed):
        p.set_support(support, (support[..., 0] == 230).astype(np.uint8))
    before, after = plain.predict(image), zoomed.predict(image)
    assert iou(after.mask == 1, truth) > max(0.8, iou(before.mask == 1, truth) + 0.2)
    ys, xs = np.nonzero(after.mask == 1)
    assert abs(ys.mean() - 760) < 5 and abs(xs.mean() - 1160) < 5  # at the square's place
    assert np.array_equal(zoomed.predict(image).probability, after.probability)  # deterministic
    blank = np.zeros_like(image)
    blank[..., 2] = 140  # nothing found: the first pass's answer, no crop
    assert np.array_equal(zoomed.predict(blank).probability, plain.predict(blank).probability)


def test_flip_averages_the_query_and_its_mirror_and_commutes_with_mirroring(model):
    """flip=True: the reading of the query averaged with that of its mirror image (flipped back);
    so a mirrored query gives the mirrored answer, and flip changes an asymmetric scene's answer."""
    rng = np.random.default_rng(11)
    support = rng.integers(0, 60, (96, 96, 3)).astype(np.uint8)
    support[30:70, 20:60] = (220, 40, 40)
    query = rng.integers(0, 60, (90, 130, 3)).astype(np.uint8)
    query[20:60, 10:50] = (220, 40, 40)
    query[50:80, 80:125] = (40, 200, 60)
    plain, flipping = (Predictor(model, size=96, fuse=False, flip=on) for on in (False, True))
    for p in (plain, flipping):
        p.set_support(support, (support[..., 0] == 220).astype(np.uint8))
    out = flipping.predict(query)
    for field in ("probability", "similarity"):
        mirror = getattr(plain.predict(query[:, ::-1].copy()), field)[:, ::-1]
        expected = (getattr(plain.predict(query), field) + mirror) / 2
        np.testing.assert_allclose(getattr(out, field), expected, atol=1e-5)
    mirrored = flipping.predict(query[:, ::-1].copy())
    np.testing.assert_allclose(mirrored.probability[:, ::-1], out.probability, atol=1e-5)
    assert not np.allclose(out.probability, plain.predict(query).probability, atol=1e-3)
    assert np.array_equal(flipping.predict(query).probability, out.probability)  # deterministic
