"""The self-support step (a second look at the query): its maths, and through the Predictor."""
import numpy as np
import pytest
import torch

from sgone import ops
from sgone import self_support as ss
from sgone.models.registry import build_model
from sgone.predictor import Predictor
from tests.helpers import mobilenet_weights
from tests.test_predictor import iou, scene


def test_pseudo_mask_and_usable():
    prob = torch.tensor([[[0.9, 0.5, 0.1], [0.75, 0.25, 0.35]]])
    mask = ss.pseudo_mask(prob, high=0.7, low=0.3)
    assert mask.tolist() == [[[1, 255, 0], [1, 0, 255]]]
    assert ss.usable(mask) and not ss.usable(ss.pseudo_mask(torch.full((1, 2, 3), 0.1)))
    # N-way: a pixel another way claims is not this way's background
    others = torch.tensor([[[0.0, 0.0, 0.9], [0.0, 0.0, 0.0]]])
    assert ss.pseudo_mask(prob, 0.7, 0.3, others)[0, 0, 2] == ops.IGNORE


def test_blend_with_itself_changes_no_score():
    torch.manual_seed(0)
    p = {"vector": torch.randn(1, 6), "background_set": torch.randn(1, 4, 6)}
    q = {"vector": torch.randn(1, 6), "background_set": torch.randn(1, 3, 6)}
    same = ss.blend_prototypes(p, p, 0.5)
    assert torch.allclose(same["vector"], p["vector"])
    feats = torch.randn(1, 6, 5, 5)
    best = lambda parts: ops.cosine_similarity_map(parts, feats).amax(dim=1)  # noqa: E731
    assert torch.allclose(best(same["background_set"]), best(p["background_set"]))
    mixed = ss.blend_prototypes(p, q, 0.25)
    assert torch.allclose(mixed["vector"], 0.75 * p["vector"] + 0.25 * q["vector"])
    assert mixed["background_set"].shape == (1, 7, 6)


@pytest.fixture(scope="module")
def model():
    from sgone.models.inference import prepare_for_inference

    return prepare_for_inference(build_model("prototype", "mobilenet_v2", weights=mobilenet_weights()))


class Colours(torch.nn.Module):
    """A backbone whose three levels are the image's colours averaged over 8x8 cells: on a noise-free
    scene of cell-aligned squares a prototype model reads every cell of the query right."""

    def forward(self, x):
        cells = torch.nn.functional.avg_pool2d(x, 8, ceil_mode=True)
        return [cells, cells, cells]


def test_query_identical_to_support_keeps_a_perfect_answer():
    from sgone.models.prototype import PrototypeModel

    image = np.zeros((96, 128, 3), np.uint8)
    image[..., 2] = 140
    image[16:48, 24:56] = (230, 30, 30)
    image[64:88, 80:120] = (230, 30, 30)  # two instances
    mask = (image[..., 0] == 230).astype(np.uint8)
    model = PrototypeModel(Colours()).eval()
    first, second = (Predictor(model, size=None, fuse=False, self_support=on) for on in (False, True))
    for p in (first, second):
        p.set_support(image, mask)
    before, after = first.predict(image), second.predict(image)
    # the first pass is perfect on the stride-8 grid (bilinear upsampling rounds the squares' corners)...
    assert iou(before.mask == 1, mask == 1) > 0.95 and (before.mask != mask).sum() <= 6 * 4 * 2
    assert np.array_equal(after.mask, before.mask)  # ...and the second look changes nothing
    assert np.allclose(after.probability, before.probability, atol=1e-5)
    assert np.array_equal(second.predict(image).probability, after.probability)  # deterministic


def test_empty_first_pass_returns_the_first_pass(model):
    rng = np.random.default_rng(1)
    s_img, s_lab = scene(96, 96, [(1, (24, 24, 48))], rng)
    query, _ = scene(96, 96, [], rng)  # background only: nothing confident to learn from
    first, second = (Predictor(model, size=96, fuse=False, self_support=on) for on in (False, True))
    for p in (first, second):
        p.set_support(s_img, (s_lab == 1).astype(np.uint8))
    a, b = first.predict(query), second.predict(query)
    assert not (a.probability > ss.HIGH).any()
    assert np.array_equal(a.probability, b.probability)


def test_second_look_reuses_the_query_encoding(model, monkeypatch):
    rng = np.random.default_rng(2)
    s_img, s_lab = scene(96, 96, [(1, (10, 10, 40))], rng)
    q_img, q_lab = scene(96, 96, [(1, (50, 40, 36)), (1, (8, 8, 20))], rng)
    p = Predictor(model, size=96, fuse=False, self_support=True)
    p.set_support(s_img, (s_lab == 1).astype(np.uint8))
    calls = []
    original = p.model.encode
    monkeypatch.setattr(p.model, "encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert iou(p.predict(q_img).mask == 1, q_lab == 1) > 0.5 and len(calls) == 1
