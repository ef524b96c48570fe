"""The maths against hand-computed values."""
import math

import pytest
import torch

from sgone import ops


def test_map_per_sample_with_ignore_pixels():
    # one channel, 2x2 features equal to the mask resolution: values 1,2,3,4
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[10.0, 20.0], [30.0, 40.0]]]])
    mask = torch.tensor([[[1, 255], [1, 0]], [[0, 0], [0, 1]]])
    out = ops.masked_average_pooling(feats, mask, mode="downsample")
    # sample 0: pixels 1 and 3 (255 ignored); sample 1: pixel 40 only
    assert out[:, 0].tolist() == pytest.approx([2.0, 40.0])


def test_map_batch_denominator_reproduces_public_defect():
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[10.0, 20.0], [30.0, 40.0]]]])
    mask = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [0, 1]]])
    out = ops.masked_average_pooling(feats, mask, denominator="batch")
    # area summed over the batch = 3: (1+3)/3 and 40/3
    assert out[:, 0].tolist() == pytest.approx([4 / 3, 40 / 3])


def test_map_downsample_area_weights():
    # 1x1x2x2 features, 4x4 mask: the top-left cell fully object, top-right half object
    feats = torch.tensor([[[[2.0, 6.0], [100.0, 100.0]]]])
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, :2, :2] = 1
    mask[0, :2, 2] = 1
    out = ops.masked_average_pooling(feats, mask, mode="downsample")
    # weights 1.0 and 0.5 -> (2*1 + 6*0.5) / 1.5
    assert out.item() == pytest.approx((2 + 3) / 1.5)


def test_map_upsample_mode_matches_on_constant_features():
    feats = torch.full((1, 3, 4, 4), 7.0)
    mask = torch.zeros(1, 32, 32, dtype=torch.long)
    mask[0, 5:20, 3:9] = 1
    mask[0, 0, :] = 255
    up = ops.masked_average_pooling(feats, mask, mode="upsample")
    down = ops.masked_average_pooling(feats, mask, mode="downsample")
    assert torch.allclose(up, torch.full((1, 3), 7.0)) and torch.allclose(down, up)


def test_map_background_region_and_empty_mask():
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[1, 0], [255, 0]]])
    assert ops.masked_average_pooling(feats, mask, region="background").item() == pytest.approx(3.0)
    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    out = ops.masked_average_pooling(feats, empty)
    assert torch.isfinite(out).all() and out.abs().sum() == 0


def test_cosine_similarity_map_hand_values():
    feats = torch.tensor([[[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])  # (1,2,1,3): vectors (1,0), (0,1), (1,1)
    vec = torch.tensor([[2.0, 0.0]])
    sim = ops.cosine_similarity_map(vec, feats)
    assert sim.shape == (1, 1, 3)
    assert sim[0, 0].tolist() == pytest.approx([1.0, 0.0, 1 / math.sqrt(2)])
    several = ops.cosine_similarity_map(torch.tensor([[[2.0, 0.0], [0.0, -1.0]]]), feats)
    assert several.shape == (1, 2, 1, 3)
    assert several[0, 1, 0].tolist() == pytest.approx([0.0, -1.0, -1 / math.sqrt(2)])


def test_fuse_vectors_average():
    v = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 6.0]])]
    assert ops.fuse_vectors(v).tolist() == [[2.0, 4.0]]


def test_fuse_predictions_max_and_vote():
    probs = torch.tensor([
        [[[0.9, 0.1, 0.6, 0.2]]],
        [[[0.8, 0.7, 0.1, 0.1]]],
        [[[0.7, 0.2, 0.3, 0.4]]],
    ])  # (K=3, B=1, 1, 4)
    assert ops.fuse_predictions(probs, "max")[0, 0].tolist() == pytest.approx([0.9, 0.7, 0.6, 0.4])
    vote = ops.fuse_predictions(probs, "vote")
    # votes above 0.5: 3, 1, 1, 0; normalised by the top vote 3
    assert vote[0, 0].tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 0.0])
    assert ops.fuse_predictions(probs, "mean")[0, 0, 0].item() == pytest.approx(0.8)
    with pytest.raises(ValueError):
        ops.fuse_predictions(probs, "median")


def test_vote_normalises_per_episode():
    probs = torch.zeros(2, 2, 1, 2)
    probs[0, 0, 0, 0] = 0.9  # episode 0: a single vote at most
    probs[:, 1, 0, 1] = 0.9  # episode 1: two votes
    vote = ops.fuse_predictions(probs, "vote")
    assert vote[0, 0].tolist() == [1.0, 0.0] and vote[1, 0].tolist() == [0.0, 1.0]


def test_region_prototypes_find_the_parts_of_a_region():
    # background made of two materials (left: direction e0, right: 2*e1) and one object cell
    f = torch.zeros(1, 3, 4, 4)
    f[0, 0, :, :2] = 1.0
    f[0, 1, :, 2:] = 2.0
    f[0, :, 0, 0] = torch.tensor([0.0, 0.0, 5.0])  # the object: left out by the weights
    w = torch.ones(1, 1, 4, 4)
    w[0, 0, 0, 0] = 0.0
    parts = ops.region_prototypes(f, w, 2)
    assert parts.shape == (1, 2, 3)
    found = sorted(tuple(v.tolist()) for v in parts[0])
    assert found == [(0.0, 2.0, 0.0), (1.0, 0.0, 0.0)]  # exact part means, not the mixed mean
    mixed = ops.masked_average_pooling(f, (w[:, 0] < 0.5).long() * 255, region="background")
    assert torch.allclose(mixed, torch.tensor([[0.4667, 1.0667, 0.0]]), atol=1e-4)  # what 1 prototype gives


def test_region_prototypes_weights_small_and_empty_regions():
    f = torch.randn(2, 5, 3, 3)
    w = torch.zeros(2, 1, 3, 3)
    w[0, 0, 1, 1] = 1.0  # one cell: every prototype is that cell
    w[0, 0, 0, 0] = 0.4  # below min_weight: ignored
    parts = ops.region_prototypes(f, w, 3)
    assert torch.allclose(parts[0], f[0, :, 1, 1].expand(3, 5))
    assert torch.equal(parts[1], torch.zeros(3, 5))  # empty region
    again = ops.region_prototypes(f, w, 3)
    assert torch.equal(parts, again)  # deterministic

