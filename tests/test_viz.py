"""sgone.viz: heat maps on one fixed scale with a colour bar; overlays that stand out on any object."""
from __future__ import annotations

import numpy as np

from sgone.viz import OVERLAY_COLOURS, SIMILARITY_RANGE, colour_bar, heatmap, overlay


def _disc(h: int, w: int, r: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((y - h / 2) ** 2 + (x - w / 2) ** 2 <= r * r).astype(np.uint8)


def test_heatmap_scale_is_fixed_so_a_poor_match_stays_cold():
    """Before, each map was stretched to its own min..max: a support matching nowhere (cosine
    0..0.1) showed as hot as a good match."""
    ramp = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    poor, good = 0.1 * ramp, 0.5 + 0.4 * ramp
    hot_poor, hot_good = heatmap(poor)[-1, -1].astype(int), heatmap(good)[-1, -1].astype(int)
    hottest = heatmap(np.ones((1, 1), np.float32))[0, 0].astype(int)
    coldest = heatmap(np.zeros((1, 1), np.float32))[0, 0].astype(int)
    assert np.abs(hot_poor - coldest).sum() < np.abs(hot_poor - hottest).sum()
    assert np.abs(hot_good - hottest).sum() < np.abs(hot_poor - hottest).sum()
    # one value, one colour, whatever else is in the map
    both = heatmap(np.array([[0.3, 0.0]], np.float32)), heatmap(np.array([[0.3, 0.9]], np.float32))
    assert np.array_equal(both[0][0, 0], both[1][0, 0])
    # below the scale's low end (negative cosine) shows as its low end
    assert np.array_equal(heatmap(np.full((1, 1), -0.7, np.float32))[0, 0], coldest)
    assert SIMILARITY_RANGE == (0.0, 1.0)


def test_heatmap_colour_bar_on_the_right_high_on_top():
    sim = np.full((120, 90), 0.5, np.float32)
    image = np.full((120, 90, 3), 128, np.uint8)
    plain, barred = heatmap(sim, image), heatmap(sim, image, colorbar=True)
    assert plain.shape == (120, 90, 3)
    assert barred.shape[0] == 120 and barred.shape[1] > 90 + 10
    assert np.array_equal(barred[:, :90], plain)
    bar = colour_bar(120)
    assert np.array_equal(barred[:, 90:], bar)
    strip = bar[:, bar.shape[1] // 8 + 2]  # a column through the colour strip
    hottest = heatmap(np.ones((1, 1), np.float32))[0, 0].astype(int)
    coldest = heatmap(np.zeros((1, 1), np.float32))[0, 0].astype(int)
    painted = [i for i in range(120) if not (strip[i] == 255).all()]
    assert np.abs(strip[painted[0]].astype(int) - hottest).sum() < 30
    assert np.abs(strip[painted[-1]].astype(int) - coldest).sum() < 30
    assert (bar[:, -(bar.shape[1] // 2):] < 100).any()  # tick labels are drawn (dark text on white)
    for height in (1, 2, 7):  # tiny maps still get a bar of their height
        assert colour_bar(height).shape[0] == height


def test_overlay_stands_out_on_a_red_object():
    """A red tint on a red object was invisible; now the tint differs from the object's colour."""
    image = np.full((60, 80, 3), 128, np.uint8)
    disc = _disc(60, 80, 20)
    image[disc == 1] = (220, 30, 30)
    out = overlay(image, disc).astype(int)
    inside = disc == 1
    change = np.abs(out[inside] - image[inside].astype(int)).sum(axis=1)
    assert change.mean() > 150  # red on red changed each pixel by only ~60
    assert (out[~inside] == image[~inside]).all()
    # a solid outline in the chosen tint
    edge = inside & ~np.pad(inside, 1)[2:, 1:-1]  # object pixels with background below
    tint = out[edge][0]
    assert tuple(tint) in OVERLAY_COLOURS and tuple(tint) != (255, 0, 0)
    assert (out[edge] == tint).all()


def test_overlay_keeps_red_on_other_objects_and_an_explicit_colour():
    image = np.full((60, 80, 3), 128, np.uint8)
    disc = _disc(60, 80, 20)
    image[disc == 1] = (40, 90, 200)  # a blue object: red stands out
    edge = (disc == 1) & ~np.pad(disc == 1, 1)[2:, 1:-1]
    assert (overlay(image, disc)[edge] == (255, 0, 0)).all()
    assert (overlay(image, disc, color=(0, 200, 0))[edge] == (0, 200, 0)).all()


def test_overlay_outline_grows_with_the_image():
    image = np.full((1200, 1600, 3), 128, np.uint8)
    disc = _disc(1200, 1600, 400)
    out = overlay(image, disc, color=(0, 255, 0), alpha=0.0)
    row = out[600, :800]  # from the left edge to the centre: background, outline, object
    solid = np.flatnonzero((row == (0, 255, 0)).all(axis=1))
    assert len(solid) == 4  # 1600 / 400 pixels thick, so it reads at full size
