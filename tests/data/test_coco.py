"""CocoSource: class ids, both fold styles, polygon / RLE / crowd masks, caching, broken trees."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from sgone.data.coco import CocoSource
from sgone.errors import SgoneError


def test_class_ids_index_category_ids(coco_root):
    source = CocoSource(coco_root)
    assert source.class_names == {1: "person", 2: "bicycle", 3: "car", 4: "airplane", 5: "train", 6: "truck",
                                  7: "traffic light", 8: "fire hydrant"}
    assert source.coco_ids[4] == 5 and source.coco_ids[8] == 11


def test_fold_styles(coco_root):
    interleaved = CocoSource(coco_root)
    contiguous = CocoSource(coco_root, split_style="contiguous")
    for fold in range(4):
        # 8 classes: interleaved fold f tests {4k + f + 1}, contiguous 2f+1..2f+2 (20f+1..20f+20 with 80)
        assert interleaved.classes(fold, "test") == [fold + 1, fold + 5]
        assert contiguous.classes(fold, "test") == [2 * fold + 1, 2 * fold + 2]
        assert set(interleaved.classes(fold, "train")) == set(range(1, 9)) - {fold + 1, fold + 5}
    with pytest.raises(SgoneError, match="split style"):
        CocoSource(coco_root, split_style="diagonal")


def test_lists_skip_crowd_only_images(coco_root):
    source = CocoSource(coco_root)
    person = source.items("train", 1)
    # three images with a person polygon, one more with only a fire-hydrant RLE object; the
    # crowd-only image (id 25) is not an example of the class
    assert "train2014/COCO_train2014_000000000025.jpg" not in person
    assert "train2014/COCO_train2014_000000000022.jpg" in person  # compressed RLE of class 1
    assert all(k.startswith("val2014/") for k in source.items("val", 3))


def test_masks_from_polygons_rle_and_crowd(coco_root):
    source = CocoSource(coco_root)
    image, mask = source.load("train2014/COCO_train2014_000000000001.jpg", 1)
    assert image.shape == (40, 56, 3) and mask.shape == (40, 56)
    assert (mask[5:25, 5:25] == 1).all()          # the polygon
    assert (mask[30:38, 2:12] == 255).all()       # the crowd region of the class
    assert set(np.unique(mask)) == {0, 1, 255}
    rle_mask = source.load_mask("train2014/COCO_train2014_000000000001.jpg", 2)  # compressed RLE
    assert (rle_mask == 1).sum() == 160 and (rle_mask[28:36, 30:50] == 1).all() and not (rle_mask == 255).any()


def test_lists_are_cached(coco_root, tmp_path, monkeypatch):
    from sgone.data import coco

    first = CocoSource(coco_root, cache_dir=tmp_path / "c")
    assert first.cache_path.parent == tmp_path / "c"
    monkeypatch.setattr(coco, "_build_lists", lambda files: (_ for _ in ()).throw(AssertionError("rebuilt")))
    again = CocoSource(coco_root, cache_dir=tmp_path / "c")
    assert again.items("val", 2) == first.items("val", 2)


def test_broken_trees(coco_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(coco_root, root, ignore=shutil.ignore_patterns(".sgone-cache"))
    (root / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(SgoneError) as info:
        CocoSource(root)
    assert str(info.value) == f"{root / 'annotations' / 'instances_val2014.json'}: annotation file not found"

    root = tmp_path / "coco2"
    shutil.copytree(coco_root, root, ignore=shutil.ignore_patterns(".sgone-cache"))
    (root / "train2014" / "COCO_train2014_000000000002.jpg").unlink()
    from PIL import Image
    Image.new("RGB", (20, 20)).save(root / "val2014" / "COCO_val2014_000000000002.jpg")
    source = CocoSource(root, strict=False)
    problems = source.check()
    assert any("COCO_train2014_000000000002.jpg: image" in p and "not found" in p for p in problems)
    assert any("COCO_val2014_000000000002.jpg: image is 20x20 but its annotation says 56x40" in p for p in problems)
