"""The temporal mode's memory: which frames it keeps (the update rule) and nearest-neighbour matching."""
from __future__ import annotations

import torch

from sgone.video.memory import FrameMemory, MemoryEntry, entry_from_probability, match, window_mask


def entry(frame, confidence=0.9, n=4):
    keys = torch.nn.functional.normalize(torch.ones(3, n), dim=0)
    return MemoryEntry(keys, keys, torch.arange(n), torch.arange(n), frame, confidence)


def test_update_rule_gates_confidence_area_spacing_and_capacity():
    mem = FrameMemory(capacity=2, every=3, min_confidence=0.8, max_growth=2.0)
    mem.set_first(entry(0, 1.0))
    assert not mem.remember(entry(1), area=10, first_area=10)  # too soon after the first frame
    assert mem.previous.frame == 1  # the previous frame is always kept (matched locally)
    assert not mem.remember(entry(3, confidence=0.5), 10, 10)  # not confident
    assert not mem.remember(entry(4), area=2, first_area=10)  # object mostly lost
    assert not mem.remember(entry(5), area=30, first_area=10)  # spilled beyond 2x the first mask
    assert mem.remember(entry(6), 10, 10)
    assert not mem.remember(entry(7), 10, 10)  # spacing counts from the last kept frame
    assert mem.remember(entry(9), 19, 10)
    assert mem.remember(entry(12), 6, 10)
    assert [e.frame for e in mem.long_term] == [9, 12]  # the oldest (6) dropped beyond capacity
    assert [e.frame for e in mem.global_entries()] == [0, 9, 12]
    assert mem.previous.frame == 12
    mem.set_first(entry(0, 1.0))
    assert mem.long_term == [] and mem.previous is None


def test_capacity_zero_keeps_only_first_and_previous():
    mem = FrameMemory(capacity=0, every=1)
    mem.set_first(entry(0, 1.0))
    assert not mem.remember(entry(5), 10, 10)
    assert [e.frame for e in mem.global_entries()] == [0] and mem.previous.frame == 5


def test_entry_keeps_confident_cells_only():
    feats = torch.nn.functional.normalize(torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0)), dim=0)
    prob = torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.2, 0.6]])
    e = entry_from_probability(feats, prob, frame=3)
    assert e.fg_at.tolist() == [0, 3] and e.bg_at.tolist() == [2, 4]
    assert torch.equal(e.fg, feats.flatten(1)[:, [0, 3]])
    assert abs(e.confidence - 0.85) < 1e-6 and e.frame == 3


def test_match_takes_the_best_reachable_cell_of_each_label():
    # two memory cells: object along x, background along y; queries near each
    keys = torch.eye(2)
    e = MemoryEntry(keys[:, :1], keys[:, 1:], torch.tensor([0]), torch.tensor([1]), 0, 1.0)
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0]]), dim=0)  # cols: queries
    fg, bg = match(q, [(e, None)])
    assert fg[0] > bg[0] and bg[1] > fg[1]
    # a window that lets query 0 reach only cell 1 (the background): no object cell reachable -> -1
    window = torch.tensor([[False, True], [True, True]])
    fg_w, _ = match(q, [(e, window)])
    assert fg_w[0] == -1.0 and fg_w[1] == fg[1]


def test_window_is_chebyshev():
    w = window_mask(3, 3, radius=1)
    assert w.shape == (9, 9) and w[0, 4] and not w[0, 2 * 3 + 2] and w.diagonal().all()


def test_entry_leaves_out_cells_that_are_not_valid():
    feats = torch.nn.functional.normalize(torch.randn(3, 1, 4, generator=torch.Generator().manual_seed(0)), dim=0)
    e = entry_from_probability(feats, torch.tensor([[0.9, 0.9, 0.1, 0.1]]), 0,
                               valid=torch.tensor([[True, False, True, False]]))
    assert e.fg_at.tolist() == [0] and e.bg_at.tolist() == [2]
