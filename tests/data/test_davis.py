"""The DAVIS-2016 reader: both split-list formats, streamed frames, broken trees named."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sgone.data.davis import DavisSource
from sgone.errors import SgoneError


def make_tree(root, sequences=("bear", "cows"), n_frames=3, shape=(12, 16), palette=False):
    for s, name in enumerate(sequences):
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for i in range(n_frames):
            img = np.full(shape + (3,), 30 * s + i, dtype=np.uint8)
            Image.fromarray(img).save(root / "JPEGImages" / "480p" / name / f"{i:05d}.jpg")
            m = np.zeros(shape, dtype=np.uint8)
            m[2:6, 3 + i:8 + i] = 1
            if palette:  # DAVIS-2017 style: instance ids in a palette PNG
                ann = Image.fromarray(m * (s + 1), mode="L").convert("P")
            else:  # DAVIS-2016 style: 0/255
                ann = Image.fromarray(m * 255)
            ann.save(root / "Annotations" / "480p" / name / f"{i:05d}.png")


def test_split_lists_in_both_formats(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "ImageSets" / "2016").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2016" / "val.txt").write_text("cows\n\n")
    (tmp_path / "ImageSets" / "480p").mkdir(parents=True)
    (tmp_path / "ImageSets" / "480p" / "train.txt").write_text(
        "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n"
        "/JPEGImages/480p/bear/00001.jpg /Annotations/480p/bear/00001.png\n"
    )
    src = DavisSource(tmp_path)
    assert src.sequences("val") == ["cows"]
    assert src.sequences("train") == ["bear"]
    assert src.sequences("trainval") == ["bear", "cows"]
    with pytest.raises(SgoneError, match="unknown DAVIS split"):
        src.sequences("test")


@pytest.mark.parametrize("palette", [False, True])
def test_sequence_reads_frames_and_binary_masks(tmp_path, palette):
    make_tree(tmp_path, palette=palette)
    seq = DavisSource(tmp_path).sequence("cows")
    assert len(seq) == 3 and seq.frame_names == ["00000", "00001", "00002"]
    image, mask = seq.first()
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1} and mask.sum() == 20
    frames = seq.frames(start=1)
    assert not isinstance(frames, list)  # a generator: one frame at a time
    names = [name for name, img in frames]
    assert names == ["00001", "00002"]
    m2 = seq.read_mask(2)
    assert m2[2, 9] == 1 and m2[2, 4] == 0  # moved two columns


def test_source_interface_one_class_per_sequence(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "ImageSets" / "2016").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2016" / "val.txt").write_text("cows\n")
    (tmp_path / "ImageSets" / "2016" / "train.txt").write_text("bear\n")
    src = DavisSource(tmp_path)
    assert src.class_names == {1: "bear", 2: "cows"}
    assert src.classes(0, "test") == [2] and src.classes(0, "train") == [1]
    keys = src.items("val", 2)
    assert keys == ["cows/00000", "cows/00001", "cows/00002"]
    image, mask = src.load(keys[1], 2)
    assert image.shape[:2] == mask.shape and mask.max() == 1


def test_broken_trees_name_the_path(tmp_path):
    with pytest.raises(SgoneError, match="nowhere"):
        DavisSource(tmp_path / "nowhere")
    (tmp_path / "JPEGImages" / "480p").mkdir(parents=True)
    with pytest.raises(SgoneError, match="Annotations"):
        DavisSource(tmp_path)
    make_tree(tmp_path / "t")
    src = DavisSource(tmp_path / "t")
    with pytest.raises(SgoneError, match="ImageSets"):
        src.sequences("val")
    with pytest.raises(SgoneError, match="nosuch"):
        src.sequence("nosuch")
    # a missing annotation is named when it is needed
    (tmp_path / "t" / "Annotations" / "480p" / "bear" / "00001.png").unlink()
    seq = src.sequence("bear")
    with pytest.raises(SgoneError, match="00001.png"):
        seq.read_mask(1)
    # a corrupt frame is named
    (tmp_path / "t" / "JPEGImages" / "480p" / "bear" / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SgoneError, match="00002.jpg"):
        list(seq.frames())
    # an empty first mask cannot be a support
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(tmp_path / "t" / "Annotations" / "480p" / "cows" / "00000.png")
    with pytest.raises(SgoneError, match="no object"):
        src.sequence("cows").first()


def test_every_second_frame_is_read_as_given_and_checked(tmp_path):
    """A copy that keeps frames 0, 2, 4, ... (as the shared train clips): read in order, step 2, no gap reported."""
    make_tree(tmp_path, sequences=("bear",), n_frames=5)
    for i in (1, 3):
        (tmp_path / "JPEGImages" / "480p" / "bear" / f"{i:05d}.jpg").unlink()
        (tmp_path / "Annotations" / "480p" / "bear" / f"{i:05d}.png").unlink()
    (tmp_path / "ImageSets" / "480p").mkdir(parents=True)
    (tmp_path / "ImageSets" / "480p" / "train.txt").write_text(
        "".join(f"/JPEGImages/480p/bear/{i:05d}.jpg /Annotations/480p/bear/{i:05d}.png\n" for i in (0, 2, 4)))
    src = DavisSource(tmp_path)
    seq = src.sequence("bear")
    assert seq.frame_names == ["00000", "00002", "00004"] and seq.frame_step == 2
    assert src.available_splits() == ["train"]
    assert src.check("train") == []
    (tmp_path / "Annotations" / "480p" / "bear" / "00002.png").unlink()
    assert src.check("train") == [f"{tmp_path / 'Annotations' / '480p' / 'bear'}: no annotation for 1 frame(s), e.g. 00002.jpg"]
    with pytest.raises(SgoneError, match="val.txt: split list not found"):
        src.sequences("val")


def test_sequence_lists_from_a_file_or_commas(tmp_path):
    from sgone.data.davis import read_sequence_list

    f = tmp_path / "tune.txt"
    f.write_text("# tuning clips\nbear\n\ncows  # a comment\n")
    assert read_sequence_list(f) == ["bear", "cows"]
    assert read_sequence_list("bear,cows") == ["bear", "cows"]
    with pytest.raises(SgoneError, match="missing.txt: sequence list file not found"):
        read_sequence_list(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(SgoneError, match="sequence list is empty"):
        read_sequence_list(tmp_path / "empty.txt")
    for blank in (",", " , ", ""):
        with pytest.raises(SgoneError, match="no sequence names"):
            read_sequence_list(blank)


def test_data_command_lists_a_davis_split(tmp_path, capsys):
    from sgone.cli import main

    make_tree(tmp_path, n_frames=3)
    (tmp_path / "ImageSets" / "2016").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2016" / "train.txt").write_text("bear\ncows\n")
    assert main(["data", "--dataset", "davis2016", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "split train: 2 sequences, 6 frames" in out and "no problems found" in out
    assert main(["data", "--dataset", "davis2016", "--root", str(tmp_path), "--split", "val"]) == 2
    assert capsys.readouterr().err.strip().endswith("val.txt)")
