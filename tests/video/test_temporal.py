"""The temporal mode: location prior reset when the object is lost, re-finding it, determinism of every mode."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sgone.engine.video_metrics import jaccard
from sgone.video import MODES, TemporalConfig, TemporalTracker, synthetic_clip, track

pytest.importorskip("skimage")


def test_location_prior_resets_when_the_previous_mask_lost_the_object():
    tracker = TemporalTracker(SimpleNamespace(model=None), TemporalConfig(lost_area=0.05, prior_sigma=1.0))
    tracker.first_area = 40.0
    prev = torch.zeros(12, 16, dtype=torch.bool)
    prev[4:8, 4:9] = True  # 20 cells: the object is there
    tracker.previous_mask = prev
    prior = tracker.prior((12, 16))
    assert prior is not None and prior[5, 5] == 1.0 and prior[11, 15] < prior[8, 10] < 1.0
    assert tracker.stats["prior_resets"] == 0
    prev2 = torch.zeros(12, 16, dtype=torch.bool)
    prev2[0, 0] = True  # 1 cell < 5% of 40: lost, so no prior (the object may reappear anywhere)
    tracker.previous_mask = prev2
    assert tracker.prior((12, 16)) is None and tracker.stats["prior_resets"] == 1
    tracker.previous_mask = torch.zeros(12, 16, dtype=torch.bool)
    assert tracker.prior((12, 16)) is None and tracker.stats["prior_resets"] == 2
    tracker.previous_mask = prev
    assert tracker.prior((24, 32)).shape == (24, 32)  # another grid: the mask is resized
    assert TemporalTracker(SimpleNamespace(model=None), TemporalConfig(prior_sigma=0)).prior((12, 16)) is None


@pytest.fixture(scope="module")
def predictor():
    from sgone.predictor import Predictor

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from sgone.video.model import DEFAULT_VIDEO_MODEL

    return Predictor(DEFAULT_VIDEO_MODEL, size=None, device="cpu", boundary="none")  # as video_predictor builds it


def test_object_that_vanishes_is_found_again_elsewhere(predictor):
    """The object leaves for 3 frames (background only) and comes back on the other side: the prior is
    reset while it is gone, so the mask follows it there instead of staying where it was."""
    clip = list(synthetic_clip(12, (96, 128), seed=3))
    frames = [clip[0], clip[1]] + [(_background(clip[k][0], clip[k][1], clip[0]), np.zeros_like(clip[k][1])) for k in (2, 3, 4)]
    frames += clip[10:12]  # back, far from where it was last seen
    stats: dict[str, int] = {}
    out = list(track(predictor, frames[0][0], frames[0][1], ((str(i), f) for i, (f, _) in enumerate(frames[1:])),
                     mode="temporal", stats=stats))
    assert stats["prior_resets"] >= 1
    back = [jaccard(pred.mask, frames[i + 1][1]) for i, (_, pred) in enumerate(out) if i + 1 >= 5]
    stay = jaccard(frames[1][1], frames[5][1])  # a mask that stayed where the object was
    assert min(back) > 0.3 and min(back) > stay + 0.2, (back, stay)


def _background(frame, mask, first):
    """`frame` with the object painted out by the first frame's pixels where it was not (a plain background)."""
    out = frame.copy()
    out[mask == 1] = np.median(frame[mask == 0], axis=0).astype(np.uint8)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_deterministic(predictor, mode):
    clip = list(synthetic_clip(5, (64, 80), seed=2))

    def run():
        return [p.mask for _, p in track(predictor, clip[0][0], clip[0][1],
                                          ((str(i), f) for i, (f, _) in enumerate(clip[1:])), mode=mode)]

    first, second = run(), run()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert any(m.any() for m in first)


def test_grey_frames_are_accepted_as_predictor_does(predictor):
    clip = list(synthetic_clip(3, (48, 64), seed=4))
    grey = [(f.mean(axis=2).astype(np.uint8), m) for f, m in clip]
    out = list(track(predictor, grey[0][0], grey[0][1], [("1", grey[1][0]), ("2", grey[2][0][:, :, None])], mode="temporal"))
    assert [p.mask.shape for _, p in out] == [(48, 64), (48, 64)]


def test_ignored_pixels_of_the_first_mask_stay_out_of_the_memory(predictor):
    frame, mask = next(synthetic_clip(1, (64, 80), seed=5))
    mask = mask.copy()
    mask[:, 40:] = 255  # the right half is "don't care"
    tracker = TemporalTracker(predictor)
    tracker.start(frame, mask)
    first = tracker.memory.first
    w = tracker._match_features(tracker._encode(frame)[1]).shape[-1]
    columns = torch.cat([first.fg_at, first.bg_at]) % w
    assert len(first.fg_at) > 0 and len(first.bg_at) > 0
    assert int(columns.max()) < (w + 1) // 2  # no cell of the ignored half, neither object nor background



class _FusedLike(torch.nn.Module):
    """A stand-in for FusedPrototypeModel: features keyed "<part>.guide" (a coarse semantic grid and
    a stride-8 detail grid), logits at the detail grid, object = bright pixels."""

    def encode(self, images):
        detail = torch.nn.functional.avg_pool2d(images, 8)
        return {"semantic.guide": torch.nn.functional.avg_pool2d(images, 16), "detail.guide": detail}

    def support_prototype(self, encoded, masks):
        return {}

    def segment(self, encoded, prototype):
        bright = encoded["detail.guide"].mean(dim=1, keepdim=True)
        return {"logits": torch.cat([0.5 - bright, bright - 0.5], dim=1) * 20}


def test_temporal_runs_on_a_fused_model_without_a_plain_guide():
    predictor = SimpleNamespace(model=_FusedLike(), size=64, device="cpu", threshold=0.5)
    frames = []
    for i in range(3):
        img = np.full((48, 64, 3), 30, np.uint8)
        img[8:32, 8 + 4 * i:32 + 4 * i] = 220
        frames.append(img)
    mask = (frames[0][:, :, 0] > 100).astype(np.uint8)
    out = list(track(predictor, frames[0], mask, [("1", frames[1]), ("2", frames[2])], mode="temporal"))
    truth = (frames[2][:, :, 0] > 100)
    assert jaccard(out[-1][1].mask, truth) > 0.8
