"""MixSource: several voclike roots, prefixed colliding names, long-tail drop, class folds, split files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sgone.commands.data import root_from_args
from sgone.data.mix import MixSource, fold_of_groups
from sgone.data.sources import build_source
from sgone.errors import SgoneError

from conftest import label_map, random_image, save_jpg, save_palette

BOX = (4, 4, 24, 30)


def make_corpus(root: Path, classes: list[str], per_class: list[int], seed: int = 0) -> None:
    """A voclike tree: class i (1-based) has per_class[i-1] images, each with one box of it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(["background", *classes]) + "\n")
    n = 0
    for c, count in enumerate(per_class, start=1):
        for _ in range(count):
            n += 1
            save_jpg(root / "JPEGImages" / f"im{n:03d}.jpg", random_image(seed + n))
            save_palette(root / "SegmentationClass" / f"im{n:03d}.png", label_map([(c, BOX)]))


@pytest.fixture
def corpora(tmp_path) -> list[Path]:
    a, b = tmp_path / "alpha", tmp_path / "beta"
    make_corpus(a, ["car", "hat", "tree", "rare"], [6, 7, 6, 2], seed=100)
    make_corpus(b, ["car", "dog", "sky", "cup", "pen"], [6, 6, 8, 6, 6], seed=200)
    return [a, b]


def test_names_prefixed_only_where_they_collide(corpora):
    source = MixSource(corpora, min_images=6)
    names = sorted(source.class_names.values())
    assert names == sorted(["alpha/car", "hat", "tree", "beta/car", "dog", "sky", "cup", "pen"])
    assert {source.class_source[c] for c in source.class_names} == {"alpha", "beta"}


def test_small_classes_are_dropped_with_one_note(corpora):
    source = MixSource(corpora, min_images=6)
    assert "rare" not in source.class_names.values()
    assert len(source.notes) == 1 and "dropped 1 class(es) with fewer than 6 images: rare (2)" in source.notes[0]
    assert source.problems == [] and source.check(5) == []
    kept = MixSource(corpora, min_images=2)
    assert "rare" in kept.class_names.values() and not kept.notes


def test_folds_partition_the_classes_and_keep_name_groups_together(corpora):
    source = MixSource(corpora, folds=2)
    tests = [set(source.classes(f, "test")) for f in range(2)]
    assert tests[0].isdisjoint(tests[1]) and tests[0] | tests[1] == set(source.class_names)
    for f in range(2):
        assert set(source.classes(f, "train")) == set(source.class_names) - tests[f]
    by_name = {source.class_names[c]: source.fold_of[c] for c in source.class_names}
    assert by_name["alpha/car"] == by_name["beta/car"]  # never tested in one fold and trained in another


def test_folds_do_not_depend_on_root_order(corpora):
    one, two = MixSource(corpora), MixSource(list(reversed(corpora)))
    fold = lambda s: {s.class_names[c]: s.fold_of[c] for c in s.class_names}
    assert fold(one) == fold(two)
    assert fold_of_groups(["a", "b", "c", "d", "e"], 4) == fold_of_groups(["e", "d", "c", "b", "a"], 4)


def test_split_files_round_trip(corpora, tmp_path):
    source = MixSource(corpora, folds=2)
    paths = source.write_splits(tmp_path / "splits")
    assert [p.name for p in paths] == ["fold0.txt", "fold1.txt"]
    assert "beta\tcar" in (paths[0].read_text() + paths[1].read_text())
    again = MixSource(corpora, folds=2, splits=tmp_path / "splits")
    assert {again.class_names[c]: again.fold_of[c] for c in again.class_names} == \
        {source.class_names[c]: source.fold_of[c] for c in source.class_names}
    (tmp_path / "splits" / "fold1.txt").write_text("beta\tunicorn\n")
    with pytest.raises(SgoneError, match="unknown class 'beta\\\\tunicorn'|unknown class"):
        MixSource(corpora, folds=2, splits=tmp_path / "splits")


def test_load_reads_the_right_corpus_and_class(corpora):
    source = MixSource(corpora)
    cid = next(c for c, n in source.class_names.items() if n == "beta/car")
    key = source.items("train", cid)[0]
    assert key.startswith("beta:")
    image, mask = source.load(key, cid)
    assert image.shape[:2] == mask.shape and mask[10, 10] == 1 and mask[35, 50] == 0
    assert source.image_path(key).parent.parent.name == "beta"


def test_bad_corpora_list_every_problem(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_corpus(a, ["x", "y"], [6, 6])
    make_corpus(b, ["z"], [6])
    save_jpg(a / "JPEGImages" / "nolabel.jpg", random_image(1))                      # no label map
    save_palette(b / "SegmentationClass" / "im001.png", label_map([(1, BOX)], h=20, w=20))  # wrong size
    save_palette(b / "SegmentationClass" / "im002.png", label_map([(7, BOX)]))     # id beyond classes.txt
    source = MixSource([a, b], strict=False)
    text = "\n".join(source.problems)
    assert "nolabel.jpg: image has no label map" in text
    assert "im001.png: mask is 20x20 but its image is 56x40" in text
    assert "im002.png: label values [7] are not class ids" in text
    with pytest.raises(SgoneError):
        MixSource([a, b])


def test_registry_and_repeated_root_flag(corpora):
    source = build_source("mix", [str(p) for p in corpora], min_images=6)
    assert len(source.class_names) == 8

    class Args:
        dataset, root = "mix", [str(p) for p in corpora]
    assert root_from_args(Args) == [str(p) for p in corpora]
    Args.dataset = "voclike"
    with pytest.raises(SgoneError, match="takes one --root"):
        root_from_args(Args)
    Args.root = [str(corpora[0])]
    assert root_from_args(Args) == str(corpora[0])


def test_named_roots(corpora):
    source = MixSource([f"first={corpora[0]}", f"second={corpora[1]}"])
    assert {source.class_source[c] for c in source.class_names} == {"first", "second"}
    assert np.all([k.split(":")[0] in ("first", "second") for c in source.class_names for k in source.items("val", c)])


def test_no_holdout_trains_and_tests_every_class(corpora):
    source = MixSource(corpora, folds=0)
    assert source.folds == 1
    assert source.classes(0, "train") == source.classes(0, "test") == sorted(source.class_names)


def test_voclike_drops_rare_classes_with_one_note(corpora):
    source = build_source("voclike", corpora[0], class_names_file="classes.txt", min_images=6)
    assert "rare" not in source.class_names.values() and "car" in source.class_names.values()
    assert source.notes == ["dropped 1 class(es) with fewer than 6 images: rare (2)"]
    assert source.check(1) == []
    assert "rare" in build_source("voclike", corpora[0], class_names_file="classes.txt").class_names.values()


def test_holding_out_a_name_covers_its_dropped_namesakes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_corpus(a, ["car", "hat"], [6, 6])
    make_corpus(b, ["car", "dog"], [3, 6])  # b's car is dropped (3 < 6 images)
    source = MixSource([a, b], folds=2)
    car = next(c for c, n in source.class_names.items() if n == "a/car")  # prefixed: b has a car class too
    assert source.own_ids("a", [car]) == [1] and source.own_ids("b", [car]) == [1]
    dog = next(c for c, n in source.class_names.items() if n == "dog")
    assert source.own_ids("a", [dog]) == [] and source.own_ids("b", [dog]) == [2]


def test_write_splits_refuses_a_broken_data_set(tmp_path, capsys):
    from sgone.cli import main

    assert main(["data", "--dataset", "mix", "--root", str(tmp_path / "missing"), "--write-splits",
                 str(tmp_path / "splits")]) == 2
    assert not (tmp_path / "splits").exists()


def test_source_balance_gives_each_corpus_an_equal_share_of_training_episodes(tmp_path):
    from sgone.data.sampler import TrainEpisodes

    big, small = tmp_path / "big", tmp_path / "small"
    make_corpus(big, ["a", "b", "c", "d", "e", "f"], [20] * 6, seed=1)
    make_corpus(small, ["g", "h"], [6, 6], seed=300)
    mix = MixSource([big, small], folds=0)  # every class trains

    def share_of_small(balance: str) -> float:
        episodes = TrainEpisodes(mix, 0, seed=0, balance=balance)
        picks = [mix.class_source[episodes.spec(i)["class_ids"][0]] for i in range(600)]
        return picks.count("small") / len(picks)

    assert share_of_small("pairs") < 0.2  # 12 of 132 pairs
    assert 0.42 < share_of_small("source") < 0.58
    assert TrainEpisodes(mix, 0, seed=0, balance="source").spec(7) == TrainEpisodes(mix, 0, seed=0, balance="source").spec(7)
    with pytest.raises(SgoneError, match="unknown balance"):
        TrainEpisodes(mix, 0, balance="classes")


def make_davis_train(root: Path, sequences: list[str], frames: int = 7, empty: tuple[int, ...] = ()) -> None:
    """A DAVIS-layout tree whose train list names `sequences`; the object (0/255 mask) is a box,
    absent from the frames numbered in `empty`."""
    from PIL import Image

    for s, name in enumerate(sequences):
        for i in range(frames):
            image = random_image(500 + 10 * s + i)
            save_jpg(root / "JPEGImages" / "480p" / name / f"{2 * i:05d}.jpg", image)
            mask = np.zeros(image.shape[:2], np.uint8)
            mask[4 + i:20 + i, 6:26] = 0 if i in empty else 255
            path = root / "Annotations" / "480p" / name / f"{2 * i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(path)
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "train.txt").write_text("".join(f"{n}\n" for n in sequences))


@pytest.fixture
def with_davis(corpora, tmp_path) -> tuple[list[Path], Path]:
    davis = tmp_path / "davis"
    make_davis_train(davis, ["dog-run", "kid-jump", "boat-ride"], frames=8, empty=(7,))
    (tmp_path / "categories.txt").write_text("# test\ndog-run\tdog\nkid-jump\tperson,cup\nboat-ride\tboat\n")
    return corpora + [davis], tmp_path / "categories.txt"


def test_davis_root_adds_training_only_classes_and_leaves_the_folds_as_they_are(corpora, with_davis):
    roots, categories = with_davis
    plain = MixSource(corpora, folds=2)
    mixed = MixSource(roots, folds=2, davis_categories=categories)
    extra = [c for c in mixed.class_names if mixed.is_train_only(c)]
    assert sorted(mixed.class_names[c] for c in extra) == ["davis/boat-ride", "davis/dog-run", "davis/kid-jump"]
    assert {c: n for c, n in mixed.class_names.items() if c not in extra} == plain.class_names  # same ids, names
    for fold in range(2):
        test = mixed.classes(fold, "test")
        assert test == plain.classes(fold, "test") and not set(test) & set(extra)
        names = {mixed.plain_names[c] for c in test}
        for c in extra:  # a sequence trains unless what its mask covers is a test class of the fold
            assert (c in mixed.classes(fold, "train")) == (not mixed.categories(c) & names)
    left_out = {mixed.class_names[c] for f in range(2) for c in extra if c not in mixed.classes(f, "train")}
    assert left_out == {"davis/dog-run", "davis/kid-jump"}  # dog and cup are test classes of some fold
    tmp_path_splits = categories.parent / "splits"
    mixed.write_splits(tmp_path_splits)
    plain.write_splits(categories.parent / "plain-splits")
    for fold in range(2):
        assert (tmp_path_splits / f"fold{fold}.txt").read_text() == (categories.parent / "plain-splits" / f"fold{fold}.txt").read_text()


def test_davis_frames_load_as_object_masks(with_davis):
    roots, categories = with_davis
    mixed = MixSource(roots, folds=0, davis_categories=categories)
    boat = next(c for c, n in mixed.class_names.items() if n == "davis/boat-ride")
    keys = mixed.items("train", boat)
    assert len(keys) == 7 and keys[1] == "davis:boat-ride/00002"  # the 8th frame shows no object
    image, mask = mixed.load(keys[1], boat)
    assert image.shape[:2] == mask.shape and set(np.unique(mask)) == {0, 1} and mask[5:21, 6:26].all()
    labels = mixed.read_labels(keys[1])
    assert set(np.unique(labels)) == {0, mixed.own_id(boat)[1]}  # own ids, as a voclike label map
    assert mixed.image_path(keys[1]).is_file() and mixed.label_path(keys[1]).is_file()


def test_davis_sequence_without_categories_or_without_a_voclike_root_is_refused(with_davis, tmp_path):
    roots, categories = with_davis
    (tmp_path / "few.txt").write_text("dog-run\tdog\n")
    mixed = MixSource(roots, folds=2, davis_categories=tmp_path / "few.txt", strict=False)
    assert len(mixed.problems) == 1 and "2 sequence(s) without an entry" in mixed.problems[0]
    assert "kid-jump" in mixed.problems[0]
    alone = MixSource([roots[-1]], folds=2, davis_categories=categories, strict=False)
    assert any("give a voclike root too" in p for p in alone.problems)


def test_bundled_davis_categories_cover_the_shared_train_sequences():
    from sgone.data.davis import CATEGORIES_FILE, DavisSource, read_categories

    known = read_categories()
    assert len(known) == 30 and all(known.values()) and CATEGORIES_FILE.is_file()
    root = Path(__file__).resolve().parents[3] / "shared" / "data" / "davis2016-train"
    if not root.is_dir():
        pytest.skip(f"{root} not found (the shared data folder)")
    assert set(DavisSource(root).sequences("train")) == set(known)


def test_data_command_with_a_davis_root_uses_the_bundled_categories(corpora, tmp_path, capsys):
    from sgone.cli import main

    davis = tmp_path / "davis"
    make_davis_train(davis, ["bear", "dog-agility"])  # bundled entries: bear -> bear, dog-agility -> dog
    code = main(["data", "--dataset", "mix", "--root", str(corpora[0]), "--root", str(corpora[1]),
                 "--root", str(davis), "--folds", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    counts = [line for line in out.splitlines() if "training-only object classes" in line]
    assert len(counts) == 2 and sorted(line.split()[0] for line in counts) == ["1", "2"]  # dog: a test class once
    make_davis_train(tmp_path / "unknown", ["my-clip"])
    code = main(["data", "--dataset", "mix", "--root", str(corpora[0]), "--root", str(tmp_path / "unknown")])
    captured = capsys.readouterr()
    assert code == 2 and "without an entry in davis2016_train_categories.txt" in captured.out + captured.err
