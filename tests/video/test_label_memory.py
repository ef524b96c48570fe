"""The memory mode: label propagation, its window, loss and re-detection, the zoom step, bounded memory."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgone.engine.video_metrics import jaccard
from sgone.ops import paste_box, zoom_box
from sgone.video.label_memory import LabelMemoryConfig, LabelMemoryTracker
from sgone.video.memory import propagate_labels, window_mask
from sgone.video.tracker import track


def _unit_grid(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(c, h, w, generator=g), dim=0)


def test_a_label_in_memory_is_carried_to_the_matching_cell_of_a_shifted_frame():
    feats = _unit_grid(32, 6, 8, seed=0)
    labels = torch.zeros(6, 8)
    labels[2, 3] = 1.0
    shifted = torch.roll(feats, shifts=(1, 2), dims=(1, 2))  # the scene moved 1 row down, 2 columns right
    out = propagate_labels(shifted.flatten(1), [feats.flatten(1)], [labels.flatten()], topk=1, temperature=0.05).view(6, 8)
    assert out[3, 5] == pytest.approx(1.0)
    assert float(out.sum()) == pytest.approx(1.0)  # nowhere else


def test_top_k_vote_weights_by_similarity_and_the_window_limits_what_is_read():
    feats = _unit_grid(32, 6, 8, seed=1)
    labels = torch.zeros(48)
    labels[0] = 1.0  # cell (0, 0)
    query = feats.flatten(1)
    soft = propagate_labels(query, [feats.flatten(1)], [labels], topk=4, temperature=0.5)
    assert 0.3 < float(soft[0]) < 1.0  # its own cell votes most, but not alone at a high temperature
    far = window_mask(6, 8, 1)  # cell (5, 7) may not read (0, 0)
    windowed = propagate_labels(query, [feats.flatten(1)], [labels], topk=4, temperature=0.05, allowed=[far])
    assert float(windowed[47]) == 0.0
    nothing = torch.zeros(48, 48, dtype=torch.bool)
    assert float(propagate_labels(query, [feats.flatten(1)], [labels], 4, 0.05, allowed=[nothing]).abs().sum()) == 0.0


def test_zoom_box_grows_clips_and_maps_a_crop_back_to_the_right_pixels():
    mask = torch.zeros(100, 120, dtype=torch.bool)
    mask[40:50, 110:116] = True  # a small square near the right edge
    box = zoom_box(mask, margin=1.0)
    top, left, bottom, right = box
    assert (top, bottom) == (30, 60) and left == 104 and right == 120  # grown by its size, clipped at the edge
    crop = mask[top:bottom, left:right].float()
    back = paste_box(torch.zeros(100, 120), crop, box)
    assert torch.equal(back > 0.5, mask)
    half = paste_box(torch.zeros(100, 120), crop[::2, ::2], box)  # a coarser crop is resized onto the box
    assert jaccard((half > 0.5).numpy(), mask.numpy()) > 0.6
    assert zoom_box(torch.zeros(5, 5, dtype=torch.bool), 1.0) is None
    assert zoom_box(mask, margin=0.0, min_side=30)[2] - zoom_box(mask, margin=0.0, min_side=30)[0] >= 30


class _Bright(torch.nn.Module):
    """A stand-in model: features are the image pooled to stride 8 (colour as the feature), the
    object is the bright pixels."""

    def encode(self, images):
        x = F.avg_pool2d(images, 8)
        return {"guide": torch.cat([x, 1.0 - x], dim=1)}

    def support_prototype(self, encoded, masks):
        return {}

    def segment(self, encoded, prototype):
        bright = encoded["guide"][:, :3].mean(dim=1, keepdim=True)
        return {"logits": torch.cat([0.5 - bright, bright - 0.5], dim=1) * 20}


def _frame(h: int, w: int, box: tuple[int, int, int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((h, w, 3), 40, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    if box is not None:
        t, l, b, r = box
        img[t:b, l:r] = 230
        mask[t:b, l:r] = 1
    return img, mask


def _fake_predictor(size: int = 128):
    return SimpleNamespace(model=_Bright(), size=size, device="cpu", threshold=0.5)


def test_zoom_finds_a_small_object_at_the_right_place():
    predictor = _fake_predictor()
    config = LabelMemoryConfig(zoom_below=0.05, guided_radius=0.0)
    frames = [_frame(480, 640, (200 + 2 * i, 300 + 3 * i, 216 + 2 * i, 320 + 3 * i)) for i in range(4)]
    tracker = LabelMemoryTracker(predictor, config)
    out = list(track(predictor, *frames[0], [(str(i), f) for i, (f, _) in enumerate(frames[1:])], mode="memory",
                     config=config))
    assert tracker.name == "memory"
    for (_, pred), (_, truth) in zip(out, frames[1:]):
        assert jaccard(pred.mask, truth) > 0.5
    zoomed = LabelMemoryTracker(predictor, config)
    zoomed.start(*frames[0])
    pred = zoomed.step(frames[1][0])
    assert zoomed.stats["zoomed"] == 1
    ys, xs = np.nonzero(pred.mask)
    assert abs(ys.mean() - 209) < 4 and abs(xs.mean() - 312.5) < 4  # centred on the square in frame pixels


def test_object_that_leaves_and_reenters_is_redetected():
    predictor = _fake_predictor()
    config = LabelMemoryConfig(guided_radius=0.0)
    frames = [_frame(96, 128, (20, 20, 52, 52)), _frame(96, 128, (20, 24, 52, 56))]
    frames += [_frame(96, 128, None)] * 3  # gone
    frames += [_frame(96, 128, (50, 80, 82, 112))] * 2  # back, elsewhere
    tracker = LabelMemoryTracker(predictor, config)
    tracker.start(*frames[0])
    preds = [tracker.step(f) for f, _ in frames[1:]]
    assert tracker.stats["lost"] >= 1
    assert not preds[2].mask.any() and not preds[3].mask.any()
    assert jaccard(preds[-1].mask, frames[-1][1]) > 0.7


def test_memory_is_bounded_whatever_the_clip_length():
    predictor = _fake_predictor(64)
    tracker = LabelMemoryTracker(predictor, LabelMemoryConfig(recent=2, guided_radius=0.0))
    first = _frame(64, 64, (10, 10, 30, 30))
    tracker.start(*first)
    for i in range(12):
        tracker.step(_frame(64, 64, (10, 10 + i, 30, 30 + i))[0])
    assert len(tracker.recent) == 2
    cells = tracker.first[0].shape[1] + sum(k.shape[1] for k, _ in tracker.recent)
    assert cells == 3 * 8 * 8  # the first and two recent frames of an 8x8 grid, nothing more


def test_memory_reads_a_fused_models_semantic_part_on_the_finest_grid():
    from sgone.errors import SgoneError
    from sgone.video.label_memory import memory_features

    detail = torch.rand(1, 5, 8, 12)
    encoded = {"semantic.guide": torch.rand(1, 7, 4, 6), "detail.guide": detail}
    finest = memory_features(encoded, "finest")
    assert torch.allclose(finest, F.normalize(detail[0], dim=0))
    assert memory_features(encoded, "semantic").shape == (7, 8, 12)
    both = memory_features(encoded, "both")
    assert both.shape == (12, 8, 12) and torch.allclose(both.norm(dim=0), torch.ones(8, 12), atol=1e-5)
    with pytest.raises(SgoneError, match="semantic part"):
        memory_features({"guide": detail}, "semantic")
    with pytest.raises(SgoneError, match="features must be"):
        memory_features(encoded, "colour")


def test_per_cell_bias_weights_memory_cells_in_the_vote():
    keys = F.normalize(torch.ones(4, 2), dim=0)  # two memory cells equally similar to the query
    query = keys[:, :1]
    labels = torch.tensor([1.0, 0.0])
    even = propagate_labels(query, [keys], [labels], topk=2, temperature=0.05)
    assert float(even[0]) == pytest.approx(0.5)
    tilted = propagate_labels(query, [keys], [labels], topk=2, temperature=0.05, bias=[torch.tensor([np.log(3.0), 0.0])])
    assert float(tilted[0]) == pytest.approx(0.75)  # the object cell weighs 3 times the other


def test_certainty_weight_lowers_the_say_of_unsure_labels_only():
    tracker = LabelMemoryTracker(_fake_predictor(), LabelMemoryConfig(certainty_weight=1.0))
    bias = tracker.certainty_bias(torch.tensor([0.0, 1.0, 0.5, 0.75]))
    assert bias[:2].abs().max() < 1e-6  # sure labels keep their weight
    assert float(bias[2]) == pytest.approx(np.log(0.05)) and float(bias[3]) == pytest.approx(np.log(0.5))
    assert LabelMemoryTracker(_fake_predictor(), LabelMemoryConfig()).certainty_bias(torch.rand(5)) == 0.0


def test_long_term_memory_keeps_confident_frames_at_a_low_rate_and_stays_bounded():
    predictor = _fake_predictor(64)
    config = LabelMemoryConfig(recent=1, long_term=2, long_every=3, long_pool=2, long_confidence=0.6,
                               guided_radius=0.0, zoom_below=0.0)  # the stand-in's frames are about 0.7-0.8 sure
    tracker = LabelMemoryTracker(predictor, config)
    tracker.start(*_frame(64, 64, (10, 10, 30, 30)))
    kept = []
    for i in range(20):
        tracker.step(_frame(64, 64, (10, 10 + i, 30, 30 + i))[0])
        kept.append(len(tracker.long))
    assert kept[:3] == [0, 0, 1] and max(kept) == 2  # one frame in 3 joins; never more than 2 kept
    assert all(k.shape[1] == 4 * 4 for k, _ in tracker.long)  # an 8x8 grid pooled by 2
    unsure = LabelMemoryTracker(predictor, replace(config, long_confidence=0.95))
    unsure.start(*_frame(64, 64, (10, 10, 30, 30)))
    for i in range(6):
        unsure.step(_frame(64, 64, (10, 10 + i, 30, 30 + i))[0])
    assert len(unsure.long) == 0  # frames less sure than the gate are not kept
    lost = LabelMemoryTracker(predictor, config)
    lost.start(*_frame(64, 64, (10, 10, 30, 30)))
    for _ in range(6):
        lost.step(_frame(64, 64, None)[0])  # the object is gone: nothing to remember
    assert len(lost.long) == 0
