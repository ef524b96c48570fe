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



def _shots_of(probs):
    """Hand-made per-shot probabilities as `fuse_shots` inputs: shot k's prototype is its index."""
    logit = torch.logit(probs.clamp(1e-6, 1 - 1e-6))  # (K,B,H,W)
    seg = lambda p: {"logits": torch.stack([torch.zeros_like(logit[p["k"]]), logit[p["k"]]], dim=1),
                     "similarity": torch.full_like(logit[p["k"]], float(p["k"]))}
    fg = lambda logits: logits.softmax(dim=1)[:, 1]
    return [{"k": k} for k in range(len(probs))], seg, fg


@pytest.mark.parametrize("fusion, expected", [
    ("max", {2: [1, 1, 1, 0], 3: [1, 1, 1, 1]}),
    # votes above 0.5 per pixel: 2 shots 2,1,1,0 (a single vote is half the top 2: kept);
    # 3 shots 3,1,2,1 (kept: at least half the top 3)
    ("vote", {2: [1, 1, 1, 0], 3: [1, 0, 1, 0]}),
])
def test_fuse_shots_and_keep_rule_with_2_and_3_shots(fusion, expected):
    probs = torch.tensor([[[[0.9, 0.9, 0.2, 0.2]]], [[[0.8, 0.3, 0.6, 0.1]]], [[[0.7, 0.1, 0.7, 0.9]]]])
    for k in (2, 3):
        protos, seg, fg = _shots_of(probs[:k])
        score, sim = ops.fuse_shots(protos, seg, fg, lambda p: 1 / 0, fusion)
        assert sim[0, 0, 0].item() == pytest.approx((k - 1) / 2)  # mean over shots
        keep = ops.keep_foreground(score, fusion, k)
        assert keep[0, 0].long().tolist() == expected[k], (fusion, k)
        assert ops.label_map(score, fusion, k)[0].tolist() == expected[k]  # (N=1,H=1,W=4)


def test_vote_with_two_shots_is_the_majority_not_the_intersection():
    votes = ops.fuse_predictions(torch.tensor([[[0.9, 0.9, 0.1]], [[0.9, 0.1, 0.1]]]), "vote")  # (K=2,B=1,3)
    assert votes[0].tolist() == [1.0, 0.5, 0.0]
    assert ops.keep_foreground(votes, "vote", 2).tolist() == [[True, True, False]]
    # a probability of exactly the threshold is not kept; nor is a 1-shot "vote" (a probability)
    assert ops.keep_foreground(torch.tensor([0.5, 0.6]), "vote", 1).tolist() == [False, True]
    assert ops.keep_foreground(torch.tensor([0.5, 0.6]), "max", 2, threshold=0.55).tolist() == [False, True]


def test_fuse_shots_avg_segments_the_averaged_prototype_once():
    calls = []
    seg = lambda p: calls.append(p) or {"logits": torch.zeros(1, 2, 2, 2), "similarity": torch.zeros(1, 2, 2)}
    score, _ = ops.fuse_shots([{"v": 1.0}, {"v": 3.0}], seg, lambda l: l.softmax(1)[:, 1],
                              lambda ps: {"v": sum(p["v"] for p in ps) / len(ps)}, "avg")
    assert calls == [{"v": 2.0}] and score.shape == (1, 2, 2)
    with pytest.raises(ValueError):
        ops.fuse_shots([{"v": 1.0}], seg, lambda l: l, lambda ps: ps[0], "median")


def test_label_map_per_way_rules_and_kept_argmax():
    scores = torch.tensor([[[0.55, 0.9, 0.2]], [[0.5, 0.95, 0.3]]])  # (N=2,1,3)
    # way 1 a probability (1 shot), way 2 a vote share (3 shots): 0.5 is kept for way 2 only
    assert ops.label_map(scores, "vote", [1, 3]).tolist() == [[1, 2, 0]]
    assert ops.label_map(scores[:, :, :1], "vote", [3, 1]).tolist() == [[1]]
    # the highest score among the ways that keep the pixel wins, not the overall highest
    assert ops.label_map(scores, "vote", [1, 3], threshold=0.6).tolist() == [[2, 2, 0]]
    assert ops.label_map(scores, "avg", 1).tolist() == [[1, 2, 0]]


def test_connected_components_eight_connected_and_numbered():
    mask = torch.zeros(8, 10, dtype=torch.bool)
    mask[1:3, 1:3] = True
    mask[3, 3] = True  # touches the first square at a corner: the same component
    mask[5:7, 6:9] = True
    labels = ops.connected_components(mask)
    assert labels[1, 1] == labels[3, 3] != labels[5, 6]
    assert set(labels.unique().tolist()) == {0, 1, 2} and (labels > 0).eq(mask).all()


def test_candidate_boxes_strongest_first_grown_and_clipped():
    score = torch.zeros(300, 400)
    score[100:110, 200:215] = 0.9  # strong, small
    score[290:300, 0:10] = 0.5  # weaker, in the corner: its grown box is clipped to the image
    boxes = ops.candidate_boxes(score, low=0.3, margin=0.5, max_boxes=3, min_side=32)
    assert len(boxes) == 2
    (t, l, b, r), corner = boxes
    assert t <= 100 and l <= 200 and b >= 110 and r >= 215 and b - t >= 32 and r - l >= 32
    assert corner[0] >= 0 and corner[1] == 0 and corner[2] == 300 and corner[3] <= 400
    assert ops.candidate_boxes(score, 0.3, 0.5, max_boxes=1) == boxes[:1]
    assert ops.candidate_boxes(torch.zeros(50, 50), 0.3, 0.5, 3) == []
    # a region that covers most of the image gains nothing from a zoom
    assert ops.candidate_boxes(torch.ones(50, 50), 0.3, 0.5, 3) == []


def test_paste_box_blends_in_place_and_keeps_leading_dims():
    full = torch.zeros(2, 10, 10)
    out = ops.paste_box(full, torch.ones(2, 5, 5), (2, 3, 7, 8), weight=0.25)
    assert full.sum() == 0 and out[:, 2:7, 3:8].eq(0.25).all() and out.sum() == 2 * 25 * 0.25
    same = ops.paste_box(full, torch.ones(2, 2, 2), (0, 0, 4, 4), inplace=True)
    assert same is full and full[:, :4, :4].eq(1).all()


def test_zoom_refine_maps_each_crop_back_to_its_pixels():
    """A fake network that finds red pixels in whatever crop it is given: the pasted answer lands on
    the full image's red square, and nothing outside the crops changes."""
    import numpy as np

    image = np.zeros((600, 800, 3), np.uint8)
    image[410:430, 605:625] = (255, 0, 0)
    first = torch.zeros(1, 600, 800)
    first[0, 400:440, 600:640] = 0.4  # a blurry first pass around the square
    crops = []

    def score_crop(crop):
        crops.append(crop.shape)
        return torch.from_numpy((crop[..., 0] == 255).astype(np.float32))[None]

    out = ops.zoom_refine(first, image, score_crop, low=0.3, margin=0.5, max_boxes=3, weight=1.0, min_side=100)
    assert len(crops) == 1 and crops[0][0] >= 100
    truth = torch.zeros(600, 800, dtype=torch.bool)
    truth[410:430, 605:625] = True
    assert torch.equal(out[0] > 0.5, truth)
    assert torch.equal(ops.zoom_refine(torch.zeros(1, 600, 800), image, score_crop, 0.3, 0.5, 3),
                       torch.zeros(1, 600, 800)) and len(crops) == 1  # nothing found: no crop
