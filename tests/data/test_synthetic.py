"""The procedural benchmark: class/fold design, determinism, masks, scene statistics, cache."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from sgone.data import synthetic
from sgone.data.synthetic import (CLASS_TABLE, NOVEL_APPEARANCES, NOVEL_SHAPES, SyntheticSource, class_appearance,
                                  class_shape, fold_of, missing_assets)
from sgone.errors import SgoneError

pytestmark = pytest.mark.skipif(bool(missing_assets()), reason="scikit-image sample photos not installed")

# A fixed sample: 2 images per class of split "train" (80 images), rendered once for the module.
SAMPLE_KEYS = [f"train/{c:02d}/{i:04d}" for c in range(1, 41) for i in (3, 41)]


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource(seed=0)


@pytest.fixture(scope="module")
def sample(source: SyntheticSource) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    return [(key, *source.render(key)) for key in SAMPLE_KEYS]


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_class_table_has_40_distinct_shape_appearance_pairs():
    assert len(CLASS_TABLE) == 40 == len(set(CLASS_TABLE))
    assert SyntheticSource.class_names == {i + 1: n for i, n in enumerate(CLASS_TABLE)}
    shapes = {class_shape(c) for c in range(1, 41)}
    appearances = {class_appearance(c) for c in range(1, 41)}
    assert len(shapes) >= 10 and len(appearances) >= 4
    assert shapes == set(synthetic.SHAPES) and appearances == set(synthetic.APPEARANCES)


def test_four_folds_of_ten_without_overlap(source):
    assert source.folds == 4
    tests = [source.classes(f, "test") for f in range(4)]
    for f, test in enumerate(tests):
        assert test == list(range(10 * f + 1, 10 * f + 11))
        train = source.classes(f, "train")
        assert len(train) == 30 and not set(train) & set(test)
        assert sorted(train + test) == list(range(1, 41))
    assert sorted(sum(tests, [])) == list(range(1, 41))


def test_unseen_classes_mix_new_combinations_new_shapes_and_new_appearances(source):
    for f in range(4):
        test, train = source.classes(f, "test"), source.classes(f, "train")
        seen_shapes = {class_shape(c) for c in train}
        seen_apps = {class_appearance(c) for c in train}
        new_shape = [c for c in test if class_shape(c) not in seen_shapes]
        new_app = [c for c in test if class_appearance(c) not in seen_apps]
        combos = [c for c in test if c not in new_shape and c not in new_app]
        assert {class_shape(c) for c in new_shape} == {NOVEL_SHAPES[f]} and len(new_shape) == 3
        assert {class_appearance(c) for c in new_app} == {NOVEL_APPEARANCES[f]} and len(new_app) == 3
        assert len(set(new_shape) & set(new_app)) == 1  # one class entirely new
        assert len(combos) == 5  # seen shape and seen appearance, never together in training
        # within the fold every class shares a shape or an appearance with another (look-alike distractors)
        for c in test[:-1]:
            assert any(d != c and (class_shape(d) == class_shape(c) or class_appearance(d) == class_appearance(c))
                       for d in test)


def test_items_list_keys_per_split(source):
    train, val = source.items("train", 12), source.items("val", 12)
    assert len(train) == 60 and len(val) == 20
    assert train[5] == "train/12/0005" and val[0] == "val/12/0000"
    small = SyntheticSource(images_per_class=7, val_images_per_class=3)
    assert len(small.items("train", 1)) == 7 and len(small.items("val", 40)) == 3


def test_same_key_same_arrays_and_seeds_differ(source):
    key = "val/07/0011"
    a_img, a_mask = source.load(key, 7)
    b_img, b_mask = SyntheticSource(seed=0).load(key, 7)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    image, labels, _ = source.render(key)  # no in-memory cache involved
    assert np.array_equal(image, a_img)
    c_img, _ = SyntheticSource(seed=1).load(key, 7)
    assert not np.array_equal(a_img, c_img)
    # train and val images of the same class and index differ too
    assert not np.array_equal(source.load("train/07/0011", 7)[0], a_img)


def test_deterministic_across_processes(source):
    keys = ["train/01/0000", "val/33/0019", "train/25/0042"]
    code = ("import hashlib, numpy as np\n"
            "from sgone.data.synthetic import SyntheticSource\n"
            "s = SyntheticSource(seed=0)\n"
            f"for k in {keys!r}:\n"
            "    img, lab = s.scene(k)\n"
            "    h = hashlib.sha1(); h.update(np.ascontiguousarray(img).tobytes()); "
            "h.update(np.ascontiguousarray(lab).tobytes())\n"
            "    print(h.hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == [digest(*source.scene(k)) for k in keys]


def test_masks_are_binary_with_a_band_between_object_and_background(sample):
    for key, image, labels, info in sample:
        c = info["class_id"]
        assert image.shape == (160, 160, 3) and image.dtype == np.uint8
        mask = synthetic.binary_from_labels(labels, c)
        assert set(np.unique(mask)) <= {0, 1, 255}
        assert (mask == 1).any() and (mask == 255).any()
        # the band separates every object pixel from every background pixel (4-neighbours)
        one, zero = mask == 1, mask == 0
        assert not (one[:, 1:] & zero[:, :-1]).any() and not (one[:, :-1] & zero[:, 1:]).any()
        assert not (one[1:, :] & zero[:-1, :]).any() and not (one[:-1, :] & zero[1:, :]).any()
        # and stays thin: a band pixel is next to an object pixel or another band pixel's object
        assert (mask == 255).sum() < 0.6 * ((mask == 1).sum() + (labels != 0).sum())


def test_load_gives_each_class_its_own_mask(source, sample):
    for key, _, labels, info in sample[:30]:
        c = info["class_id"]
        img, mask = source.load(key, c)
        assert img.shape == (160, 160, 3) and mask.shape == (160, 160) and mask.dtype == np.uint8
        assert np.array_equal(mask == 1, labels == c)
        present = {o["class_id"] for o in info["objects"] if o["class_id"] is not None}
        for d in present - {c}:
            other = source.load_mask(key, d)
            assert (other == 1).any() and not ((other == 1) & (mask == 1)).any()
        absent = next(x for x in range(1, 41) if x not in present)
        assert not (source.load_mask(key, absent) == 1).any()
        assert np.array_equal(source.load_mask(key, absent) == 255, mask == 255)  # one band for all classes


def test_distractors_and_occlusion_in_at_least_half_the_images(sample):
    with_distractors = sum(info["distractors"] > 0 for *_, info in sample)
    occluded = sum(info["occluded"] for *_, info in sample)
    assert with_distractors >= len(sample) / 2 and occluded >= len(sample) / 2
    for key, _, labels, info in sample:
        c = info["class_id"]
        for obj in info["objects"]:
            if obj["class_id"] is not None and obj["role"] != "target":
                assert obj["class_id"] != c and fold_of(obj["class_id"]) == fold_of(c)  # same fold only
        if info["occluded"]:
            assert 0.02 < info["target_hidden"] < 0.6
    # some distractors look like the target (same shape or same appearance)
    lookalikes = sum(any(o["role"] != "target" and o["class_id"] is not None
                         and (o["shape"] == class_shape(info["class_id"])
                              or o["appearance"] == class_appearance(info["class_id"]))
                         for o in info["objects"]) for *_, info in sample)
    assert lookalikes >= len(sample) / 4


def test_target_area_in_a_reasonable_range(sample):
    areas = []
    for key, _, labels, info in sample:
        area = (labels == info["class_id"]).mean()
        assert 0.008 < area < 0.3, (key, area)
        assert abs(area - info["target_area"]) < 0.05
        areas.append(area)
    assert 0.04 < float(np.median(areas)) < 0.15


def test_disk_cache_round_trip(tmp_path, source):
    key = "train/18/0002"
    cached = SyntheticSource(seed=0, cache_dir=tmp_path)
    first = cached.scene(key)
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 1 and files[0].name == "0002.npy" and "seed0-px160" in str(files[0])
    again = SyntheticSource(seed=0, cache_dir=tmp_path).scene(key)  # read back from disk
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(np.array_equal(a, b) for a, b in zip(first, source.render(key)[:2]))
    files[0].write_bytes(b"broken")  # a damaged file is rendered again
    assert np.array_equal(SyntheticSource(seed=0, cache_dir=tmp_path).scene(key)[0], first[0])


def test_other_image_sizes():
    src = SyntheticSource(seed=3, image_size=96)
    img, mask = src.load("val/40/0001", 40)
    assert img.shape == (96, 96, 3) and mask.shape == (96, 96) and (mask == 1).any()
    big = SyntheticSource(seed=3, image_size=320)
    assert big.band_radius == 2 and big.load("val/40/0001", 40)[0].shape == (320, 320, 3)


def test_bad_arguments_raise_sgone_errors(source):
    for call in (lambda: source.classes(4, "test"), lambda: source.classes(0, "seen"),
                 lambda: source.items("test", 1), lambda: source.items("train", 41),
                 lambda: source.load("train/1/0000", 1), lambda: source.load("train/01/0060", 1),
                 lambda: source.load("train/41/0000", 1), lambda: source.load("train/01/0000", 0),
                 lambda: SyntheticSource(image_size=8), lambda: SyntheticSource(seed=-1)):
        with pytest.raises(SgoneError):
            call()


def test_episodes_from_the_sampler(source):
    sampler = pytest.importorskip("sgone.data.sampler")
    episode = sampler.TrainEpisodes(source, fold=1, shots=1, ways=2, length=3)[0]
    assert episode.query_image.shape == (160, 160, 3)
    assert set(np.unique(episode.query_mask)) <= {0, 1, 2, 255} and (episode.query_mask == 1).any()
    assert all(c not in range(11, 21) for c in episode.class_ids)
