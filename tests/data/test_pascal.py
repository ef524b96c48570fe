"""PascalSource: folds, lists, the small-object rule, list caching, masks and broken trees."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sgone.data import pascal
from sgone.data.pascal import PascalSource
from sgone.errors import SgoneError

SMALL_RULE = 100  # the trees' images are 40x56: 400-pixel objects stay, 9-pixel ones go


def test_folds_follow_pascal_5i(voc_root):
    source = PascalSource(voc_root, min_pixels=SMALL_RULE)
    for fold in range(4):
        test = source.classes(fold, "test")
        assert test == list(range(5 * fold + 1, 5 * fold + 6))
        assert sorted(test + source.classes(fold, "train")) == list(range(1, 21))
    assert source.class_names[1] == "aeroplane" and source.class_names[20] == "tvmonitor"
    with pytest.raises(SgoneError, match="folds 0..3"):
        source.classes(4, "test")


def test_train_list_excludes_val_and_uses_train_aug(voc_root):
    source = PascalSource(voc_root, min_pixels=SMALL_RULE)
    train = {k for c in range(1, 21) for k in source.items("train", c)}
    val = {k for c in range(1, 21) for k in source.items("val", c)}
    assert train and val and not train & val
    assert all("_v" in k for k in val)
    # an SBD list that also names a val image: the val image is still left out
    aug = voc_root / "ImageSets" / "SegmentationAug"
    aug.mkdir(parents=True)
    (aug / "train_aug.txt").write_text("/JPEGImages/2010_t010.jpg /SegmentationClassAug/2010_t010.png\n"
                                       "2010_t011\n2010_v010\n")
    source = PascalSource(voc_root, min_pixels=SMALL_RULE)
    assert source.items("train", 1) == ["2010_t010", "2010_t011"]
    assert source.items("val", 1) == ["2010_v010", "2010_v011", "2010_v012"]


def test_small_object_rule_is_switchable(voc_root):
    kept = PascalSource(voc_root, drop_small=False)
    dropped = PascalSource(voc_root, min_pixels=SMALL_RULE)
    # image t010 holds a 9-pixel object of class 2
    assert "2010_t010" in kept.items("train", 2)
    assert "2010_t010" not in dropped.items("train", 2)
    assert len(dropped.items("train", 2)) == 3 and len(kept.items("train", 2)) == 4
    assert PascalSource(voc_root).items("train", 1) == []  # default 2*32*32 exceeds these tiny objects


def test_lists_are_cached_and_reused(voc_root, monkeypatch):
    first = PascalSource(voc_root, min_pixels=SMALL_RULE)
    assert first.cache_path is not None and first.cache_path.parent == voc_root / ".sgone-cache"
    payload = json.loads(first.cache_path.read_text())
    assert payload["kind"] == "pascal" and payload["settings"]["mask_dir"] == "SegmentationClassAug"
    assert payload["data"]["counts"]["2010_t010"] == {"1": 400, "2": 9}

    def no_scan(*args, **kwargs):
        raise AssertionError("the cached lists should have been used")

    monkeypatch.setattr(pascal, "scan_label_maps", no_scan)
    again = PascalSource(voc_root, drop_small=False)  # other filter settings reuse the same scan
    assert again.items("train", 2)[:1] == ["2010_t010"]
    assert not list(voc_root.glob(".sgone-cache/*.tmp"))  # atomic writes leave no temp files


def test_cache_goes_elsewhere_when_root_is_read_only(voc_root, tmp_path, monkeypatch):
    import sgone.io

    real_write = sgone.io.atomic_write

    def read_only_root(path, data):
        # the tests may run as root, where folder permissions do not stop writes: refuse them here
        if str(path).startswith(str(voc_root)):
            raise PermissionError(13, "Read-only file system", str(path))
        real_write(path, data)

    monkeypatch.setattr(sgone.io, "atomic_write", read_only_root)
    source = PascalSource(voc_root, min_pixels=SMALL_RULE, cache_dir=tmp_path / "lists")
    assert source.cache_path.parent == tmp_path / "lists"
    fallback = PascalSource(voc_root, use_sbd=False, min_pixels=SMALL_RULE)
    assert fallback.cache_path is not None and "user-cache" in str(fallback.cache_path)
    assert not (voc_root / ".sgone-cache").exists()
    assert PascalSource(voc_root, use_sbd=False).cache_path == fallback.cache_path  # found again


def test_masks_keep_ignore_and_palette_masks_read(voc_root):
    for use_sbd in (True, False):
        source = PascalSource(voc_root, use_sbd=use_sbd, min_pixels=SMALL_RULE)
        image, mask = source.load("2010_t010", 1)
        assert image.shape == (40, 56, 3) and mask.shape == (40, 56)
        assert set(np.unique(mask)) == {0, 1, 255}
        assert (mask == 1).sum() == 400
        other = source.load_mask("2010_t010", 2)
        assert (other == 1).sum() == 9 and (other == 255).any()


def test_broken_trees_give_one_line_errors(voc_root, tmp_path):
    with pytest.raises(SgoneError) as info:
        PascalSource(tmp_path / "nowhere")
    assert str(info.value) == f"{tmp_path / 'nowhere'}: folder not found"

    (voc_root / "SegmentationClassAug" / "2010_v031.png").unlink()
    with pytest.raises(SgoneError) as info:
        PascalSource(voc_root)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(voc_root / "SegmentationClassAug" / "2010_v031.png"))


def test_size_mismatch_and_check_lists_everything(voc_root):
    from PIL import Image

    Image.new("L", (30, 30)).save(voc_root / "SegmentationClassAug" / "2010_t050.png")
    (voc_root / "JPEGImages" / "2010_v011.jpg").unlink()
    with pytest.raises(SgoneError):
        PascalSource(voc_root)
    source = PascalSource(voc_root, min_pixels=SMALL_RULE, strict=False)
    problems = source.check(shots=2)
    assert any("2010_v011.jpg: image" in p for p in problems)
    assert any("2010_t050.png: mask is 30x30 but its image is 56x40" in p for p in problems)
    # class 5 lost a training image (size mismatch) and class 1 a val image: 2 left, 3 needed for 2-shot
    assert any("class 5 'bottle' has 2 image(s) in split 'train'" in p for p in problems)
    assert any("class 1 'aeroplane' has 2 image(s) in split 'val'" in p for p in problems)
