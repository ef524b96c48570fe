"""The temporal mode's maths: location prior, box and guided filters, colour models, match grid."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgone.boundary import box_filter, grey_image, guided_filter
from sgone.video.colour import colour_histogram, colour_index, colour_log_ratio, distance_to_mask, location_prior
from sgone.video.temporal import match_stride


def test_distance_and_prior_fall_with_distance_from_the_object():
    mask = torch.zeros(9, 9, dtype=torch.bool)
    mask[4, 4] = True
    d = distance_to_mask(mask)
    assert d[4, 4] == 0 and d[4, 7] == 3 and d[0, 0] == pytest.approx(math.hypot(4, 4))
    prior = location_prior(mask, sigma=1.0)
    assert prior[4, 4] == 1.0 and prior[4, 5] > prior[4, 7] > prior[0, 0]
    assert prior[4, 5] == pytest.approx(math.exp(-0.5))  # width = sigma x sqrt(area) = 1 cell
    assert location_prior(mask, sigma=1.0, floor=0.2).min() >= 0.2
    assert torch.isinf(distance_to_mask(torch.zeros(3, 3, dtype=torch.bool))).all()


@pytest.mark.parametrize("radius", [1, 3])
def test_box_filter_is_the_border_clipped_mean(radius):
    x = torch.rand(1, 1, 7, 11, generator=torch.Generator().manual_seed(0))
    ref = F.avg_pool2d(x, 2 * radius + 1, 1, radius, count_include_pad=False)
    assert torch.allclose(box_filter(x, radius), ref, atol=1e-6)


def test_guided_filter_moves_a_misplaced_boundary_onto_the_guides_edge():
    guide = torch.zeros(40, 40)
    guide[:, 20:] = 1.0  # the frame: a sharp vertical edge at column 20
    coarse = torch.zeros(40, 40)
    coarse[:, 23:] = 1.0  # the network's boundary, 3 pixels off and blurred (as after bilinear upsampling)
    prob = F.avg_pool2d(coarse[None, None], 9, 1, 4, count_include_pad=False)[0, 0]
    wrong = ((prob > 0.5) != (guide > 0.5)).sum(dim=1)
    assert (wrong == 3).all()
    for scale in (1, 2, 4):  # the fast variant (coefficients fitted on a coarser grid) too
        out = guided_filter(guide, prob, radius=8, eps=1e-3, scale=scale)
        assert ((out > 0.5) != (guide > 0.5)).sum() == 0, scale
    flat = torch.full((20, 20), 0.3)
    assert torch.allclose(guided_filter(torch.rand(20, 20), flat, 3, 1e-3), flat, atol=1e-5)  # constants stay


def test_colour_models_favour_the_objects_colour():
    image = torch.zeros(10, 10, 3, dtype=torch.uint8)
    image[:, :5] = torch.tensor([200, 30, 30], dtype=torch.uint8)  # red object on the left
    image[:, 5:] = torch.tensor([30, 30, 200], dtype=torch.uint8)
    index = colour_index(image, 8)
    obj = torch.zeros(10, 10)
    obj[:, :5] = 1
    fg, bg = colour_histogram(index, obj, 8), colour_histogram(index, 1 - obj, 8)
    assert fg.sum() == pytest.approx(1.0) and fg.max() == pytest.approx(1.0)
    ratio = colour_log_ratio(index, fg, bg, clip=3.0)
    assert (ratio[:, :5] == 3.0).all() and (ratio[:, 5:] == -3.0).all()
    assert torch.allclose(colour_histogram(index, torch.zeros(10, 10), 8), torch.full((512,), 1 / 512))


def test_match_stride_bounds_the_cells():
    assert match_stride((12, 16), 600) == 1
    assert match_stride((34, 60), 600) == 2
    h, w = 60, 107
    s = match_stride((h, w), 600)
    assert -(-h // s) * -(-w // s) <= 600 < -(-h // (s - 1)) * -(-w // (s - 1))


def test_distance_to_mask_is_exact_and_measures_only_against_the_edge(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    for trial in range(4):
        mask = F.max_pool2d((torch.rand(1, 1, 23, 31, generator=gen) > 0.97).float(), 5, 1, 2)[0, 0] > 0
        mask[0, :] |= trial == 0  # an object touching the image border
        ys, xs = torch.meshgrid(torch.arange(23.0), torch.arange(31.0), indexing="ij")
        cells = torch.stack([ys.flatten(), xs.flatten()], 1)
        brute = torch.cdist(cells, cells[mask.flatten()]).amin(1).view(23, 31)
        assert torch.allclose(distance_to_mask(mask, chunk=100), brute)
    # a filled half of the grid: distances are taken to its one-cell edge, not to all its cells
    half = torch.zeros(40, 40, dtype=torch.bool)
    half[:, :20] = True
    sizes = []
    cdist = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda a, b: sizes.append(b.shape[0]) or cdist(a, b))
    d = distance_to_mask(half)
    assert set(sizes) == {40} and d[0, 39] == 20 and d[5, 5] == 0


def test_filters_and_matching_stay_on_the_tensors_device():
    # "meta" stands in for a GPU: nothing may be created on the CPU beside the inputs
    meta = torch.device("meta")
    g, p = torch.rand(16, 16, device=meta), torch.rand(16, 16, device=meta)
    assert box_filter(g[None, None], 2).device == meta
    assert guided_filter(g, p, 4, 1e-2, scale=2).device == meta
    from sgone.video.memory import MemoryEntry, match, window_mask

    entry = MemoryEntry(torch.rand(4, 3, device=meta), torch.rand(4, 2, device=meta),
                        torch.arange(3, device=meta), torch.arange(2, device=meta), 0, 1.0)
    window = window_mask(2, 5, 1.0, device=meta)
    fg, bg = match(torch.rand(4, 10, device=meta), [(entry, window)])
    assert fg.device == meta and bg.device == meta and window.device == meta


@pytest.mark.parametrize("bins", [1, 7, 16, 64, 256])
def test_colour_index_is_the_cell_of_each_channel_value(bins):
    image = torch.randint(0, 256, (9, 11, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(bins))
    image[0, 0] = torch.tensor([0, 128, 255], dtype=torch.uint8)
    q = image.long() * bins // 256  # the definition, in int64
    expected = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    index = colour_index(image, bins)
    assert index.dtype == torch.long and torch.equal(index, expected)
    assert int(index.max()) < bins ** 3


def test_grey_image_is_the_channel_mean_in_unit_range():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image[0, 0] = 255
    grey = grey_image(image)
    assert grey.dtype == torch.float32 and grey.shape == (5, 7) and float(grey[0, 0]) == pytest.approx(1.0)
    assert torch.allclose(grey, torch.from_numpy(image.astype(np.float64).mean(axis=2) / 255).float(), atol=1e-6)
