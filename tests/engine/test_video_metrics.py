"""J and F of the DAVIS toolkit checked against hand-computed cases, and the DAVIS-2016 protocol."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sgone.engine.video_metrics import (
    boundary_radius,
    dilate_disk,
    evaluate_davis,
    f_measure,
    jaccard,
    seg2bmap,
    statistics,
    summarize_sequences,
)
from sgone.errors import SgoneError


def square(shape, top, left, size_h, size_w=None):
    m = np.zeros(shape, dtype=np.uint8)
    m[top:top + size_h, left:left + (size_w or size_h)] = 1
    return m


# ----------------------------------------------------------------------------- J
def test_jaccard_hand_cases():
    a = square((4, 4), 1, 0, 2)  # 2x2 at cols 0-1
    b = square((4, 4), 1, 1, 2)  # shifted one column: overlap 2 px, union 6 px
    assert jaccard(a, b) == pytest.approx(2 / 6)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, np.zeros_like(a)) == 0.0
    assert jaccard(np.zeros_like(a), a) == 0.0
    # both empty: the toolkit scores 1 (nothing to find, nothing found)
    assert jaccard(np.zeros_like(a), np.zeros_like(a)) == 1.0
    # 255 / any non-zero counts as object
    assert jaccard(a * 255, a) == 1.0
    with pytest.raises(ValueError):
        jaccard(a, np.zeros((3, 3)))


def test_jaccard_void_hand_case():
    a = square((4, 4), 0, 0, 4, 2)  # cols 0-1
    b = square((4, 4), 0, 1, 4, 2)  # cols 1-2
    void = np.zeros((4, 4), dtype=np.uint8)
    void[:, 2] = 1  # column 2 ignored: union = cols 0-1 (8), inter = col 1 (4)
    assert jaccard(a, b, void=void) == pytest.approx(0.5)


def test_one_pixel_shift_of_a_square_j():
    gt = square((480, 854), 100, 100, 100)
    pred = square((480, 854), 100, 101, 100)
    assert jaccard(pred, gt) == pytest.approx(99 * 100 / (101 * 100))


# ----------------------------------------------------------------------------- boundaries
def test_seg2bmap_hand_case():
    seg = square((5, 5), 1, 1, 2)
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=bool,
    )
    assert np.array_equal(seg2bmap(seg), expected)
    assert not seg2bmap(np.zeros((5, 5))).any()
    # a full mask has no boundary except where the toolkit's last-row/column rules look
    assert not seg2bmap(np.ones((5, 5))).any()


def _naive_dilate(mask, r):
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    for y, x in zip(*np.nonzero(mask)):
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy * dy + dx * dx <= r * r and 0 <= y + dy < h and 0 <= x + dx < w:
                    out[y + dy, x + dx] = True
    return out


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 8])
def test_dilate_disk_matches_a_naive_disk(radius):
    rng = np.random.default_rng(radius)
    mask = rng.random((23, 31)) > 0.97
    mask[0, 0] = mask[-1, -1] = True  # border pixels: nothing wraps around
    assert np.array_equal(dilate_disk(mask, radius), _naive_dilate(mask, radius))


def test_boundary_radius_follows_the_toolkit():
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius((30, 40)) == 1  # ceil(0.4)
    assert boundary_radius((100, 100), bound_th=3) == 3  # >= 1 means pixels


# ----------------------------------------------------------------------------- F
def test_f_identical_and_empty_masks():
    gt = square((30, 40), 10, 10, 10)
    empty = np.zeros_like(gt)
    assert f_measure(gt, gt) == 1.0
    assert f_measure(empty, empty) == 1.0  # both without boundary
    assert f_measure(empty, gt) == 0.0  # precision 1, recall 0
    assert f_measure(gt, empty) == 0.0  # precision 0, recall 1
    assert f_measure(empty, gt, return_pr=True) == (0.0, 1.0, 0.0)
    assert f_measure(gt, empty, return_pr=True) == (0.0, 0.0, 1.0)


def test_f_one_pixel_shift_is_within_tolerance():
    gt = square((480, 854), 100, 100, 100)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (0, -1)):
        pred = np.roll(np.roll(gt, dy, axis=0), dx, axis=1)
        assert f_measure(pred, gt) == 1.0
    # beyond the tolerance (8 px at 480p) the shifted sides stop matching
    pred = np.roll(gt, 9, axis=1)
    assert f_measure(pred, gt) < 1.0


def test_f_hand_computed_shift_beyond_tolerance():
    """30x40 image: tolerance ceil(0.008 * 50) = 1 px, a disk of radius 1 (the 4-neighbourhood).

    A 10x10 square at rows/cols 10-19 has the seg2bmap boundary of the 11x11 outline rows 9-19,
    cols 9-19 (40 px). Shifted 3 columns right, its outline spans cols 12-22. Matched pixels of
    the shifted outline: top row x = 12..20 (x=20 touches (9, 19) of the other outline) = 9,
    the bottom row likewise 9, the left side x=12 only at its ends (rows 10 and 18 touch the
    other outline's top and bottom rows) = 2, the right side 0 -> precision = 20/40; by
    symmetry recall = 20/40, so F = 0.5.
    """
    gt = square((30, 40), 10, 10, 10)
    pred = square((30, 40), 10, 13, 10)
    f, precision, recall = f_measure(pred, gt, return_pr=True)
    assert precision == pytest.approx(20 / 40)
    assert recall == pytest.approx(20 / 40)
    assert f == pytest.approx(0.5)
    # a one-pixel shift stays inside the 1-px tolerance
    assert f_measure(square((30, 40), 10, 11, 10), gt) == 1.0
    # two pixels: outline cols 11-21 vs 9-19; top/bottom rows matched x = 11..20 -> 10 each,
    # left side 2 (its ends), right side 0 -> 22 of 40
    f2, p2, r2 = f_measure(square((30, 40), 10, 12, 10), gt, return_pr=True)
    assert p2 == pytest.approx(22 / 40) and r2 == pytest.approx(22 / 40)


def test_f_precision_recall_asymmetric_case():
    """A prediction that finds half the object: every predicted boundary pixel is near the true
    boundary or not, counted by hand on a 1-px tolerance."""
    gt = square((30, 40), 10, 10, 10, 20)  # rows 10-19, cols 10-29; outline rows 9-19, cols 9-29
    pred = square((30, 40), 10, 10, 10, 10)  # left half; outline rows 9-19, cols 9-19
    f, precision, recall = f_measure(pred, gt, return_pr=True)
    # pred outline (40 px): top and bottom rows (2 x 11) and the left side (9) lie on gt's outline;
    # its right side (x = 19, rows 10-18) is 10 px from gt's right side, matched only at its
    # ends (rows 10 and 18 touch gt's top and bottom rows) -> 33/40
    assert precision == pytest.approx(33 / 40)
    # gt outline (2 x 21 + 2 x 9 = 60 px): top/bottom x = 9..20 matched (x=20 touches (9,19)) = 24,
    # left side 9 -> 33/60
    assert recall == pytest.approx(33 / 60)
    assert f == pytest.approx(2 * (33 / 40) * (33 / 60) / (33 / 40 + 33 / 60))


# ----------------------------------------------------------------------------- statistics
def test_statistics_mean_recall_decay_by_hand():
    x = [1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    s = statistics(x)
    assert s["mean"] == pytest.approx(5.0 / 8)
    assert s["recall"] == pytest.approx(5 / 8)  # strictly above 0.5
    # toolkit bins for n=8: edges round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7];
    # first bin x[0:3] (mean 1.0), last bin x[5:8] (mean 0.2)
    assert s["decay"] == pytest.approx(0.8)
    flat = statistics([0.7] * 5)
    assert flat == {"mean": pytest.approx(0.7), "recall": 1.0, "decay": pytest.approx(0.0)}
    one = statistics([0.3])
    assert one["decay"] == 0.0 and one["recall"] == 0.0
    assert all(math.isnan(v) for v in statistics([]).values())


def test_statistics_long_sequences_do_not_wrap():
    # the toolkit casts bin edges to uint8; 300 frames must still bin over the whole sequence
    x = np.linspace(1.0, 0.0, 300)
    s = statistics(x)
    assert s["decay"] > 0.7


def test_summary_is_the_mean_over_sequences():
    per_frame = {"a": {"J": [1.0, 1.0], "F": [1.0, 0.0]}, "b": {"J": [0.0], "F": [0.5]}}
    res = summarize_sequences(per_frame)
    assert res["overall"]["J"]["mean"] == pytest.approx(0.5)  # not frame-weighted (2/3)
    assert res["overall"]["F"]["mean"] == pytest.approx((0.5 + 0.5) / 2)
    assert res["overall"]["J&F"] == pytest.approx(0.5)
    assert res["sequences"]["a"]["frames_scored"] == 2


# ----------------------------------------------------------------------------- protocol
class _Pred:
    def __init__(self, mask):
        self.mask = mask
        self.probability = mask.astype(np.float32)
        self.similarity = mask.astype(np.float32)


class OraclePredictor:
    """Returns the true mask, identified by the frame index stamped in pixel (0, 0); frames listed
    in `wrong` get an empty mask instead."""

    def __init__(self, masks_by_index, wrong=()):
        self.masks = masks_by_index
        self.wrong = set(wrong)
        self.supports = 0

    def set_support(self, images, masks):
        self.supports += 1

    def predict(self, image):
        i = int(image[0, 0, 0])
        mask = self.masks[i]
        return _Pred(np.zeros_like(mask) if i in self.wrong else mask)

    def update_support(self, mask, weight=0.2):
        pass


def make_davis(root, sequences, n_frames=6, shape=(24, 32), year2017=False):
    """A tiny DAVIS tree; frame i of every sequence carries i in pixel (0, 0)."""
    from PIL import Image

    masks = {}
    for s, name in enumerate(sequences):
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for i in range(n_frames):
            img = np.full(shape + (3,), 40 + 10 * s, dtype=np.uint8)
            m = square(shape, 4 + i, 4 + i, 8)
            img[m == 1] = 200
            img[0, 0] = i
            Image.fromarray(img).save(root / "JPEGImages" / "480p" / name / f"{i:05d}.png")  # lossless for the stamp
            ann = m * (2 if year2017 else 255)
            Image.fromarray(ann.astype(np.uint8)).save(root / "Annotations" / "480p" / name / f"{i:05d}.png")
            masks[i] = m
    return masks


def test_evaluate_davis_excludes_first_and_last_frames(tmp_path):
    root = tmp_path / "DAVIS"
    masks = make_davis(root, ["seqa", "seqb"], n_frames=6)
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("seqa\nseqb\n")
    # the last frame (5) is wrong: the protocol does not score it
    res = evaluate_davis(OraclePredictor(masks, wrong={5}), root, tmp_path / "out", progress=False, mode="independent")
    assert res["overall"]["J"]["mean"] == 1.0 and res["overall"]["F"]["mean"] == 1.0
    assert res["sequences"]["seqa"]["frames_scored"] == 4  # frames 1..4 of 0..5
    # a wrong middle frame is scored: J = 3/4 per sequence, recall 3/4
    res = evaluate_davis(OraclePredictor(masks, wrong={2}), root, tmp_path / "out2", progress=False, mode="independent")
    assert res["overall"]["J"]["mean"] == pytest.approx(0.75)
    assert res["overall"]["J"]["recall"] == pytest.approx(0.75)
    assert res["overall"]["F"]["mean"] == pytest.approx(0.75)
    saved = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert saved["per_frame"]["seqa"]["J"] == [1.0, 0.0, 1.0, 1.0]
    md = (tmp_path / "out2" / "results.md").read_text()
    assert "| seqa |" in md and "**mean**" in md and "75.0" in md


def test_evaluate_davis_sequences_and_masks(tmp_path):
    root = tmp_path / "DAVIS"
    masks = make_davis(root, ["only"], n_frames=4, year2017=True)  # instance-id annotations
    res = evaluate_davis(OraclePredictor(masks), root, tmp_path / "out", sequences=["only"], save_masks=True, progress=False, mode="independent")
    assert res["overall"]["J"]["mean"] == 1.0
    written = sorted(p.name for p in (tmp_path / "out" / "masks" / "only").iterdir())
    assert written == ["00001.png", "00002.png", "00003.png"]


def test_evaluate_davis_propagate_mode_runs(tmp_path):
    root = tmp_path / "DAVIS"
    masks = make_davis(root, ["s"], n_frames=5)
    res = evaluate_davis(OraclePredictor(masks), root, tmp_path / "out", mode="propagate", sequences=["s"], progress=False)
    assert res["mode"] == "propagate" and res["propagation"]["weight"] > 0
    assert res["overall"]["J"]["mean"] == 1.0


def _toolkit_f(pred, gt, bound_th=0.008):
    """The DAVIS toolkit's f_measure, written with skimage's disk and scipy's dilation."""
    ndi = pytest.importorskip("scipy.ndimage")
    morph = pytest.importorskip("skimage.morphology")
    r = int(np.ceil(bound_th * np.linalg.norm(pred.shape)))
    fb, gb = seg2bmap(pred), seg2bmap(gt)
    fd = ndi.binary_dilation(fb, structure=morph.disk(r))
    gd = ndi.binary_dilation(gb, structure=morph.disk(r))
    nf, ng = fb.sum(), gb.sum()
    if nf == 0 or ng == 0:
        return None
    p, rc = (fb & gd).sum() / nf, (gb & fd).sum() / ng
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def test_f_matches_a_scipy_skimage_reference_on_random_blobs():
    rng = np.random.default_rng(0)
    for trial in range(6):
        h, w = (120, 200) if trial % 2 else (480, 854)
        gt = np.zeros((h, w), dtype=np.uint8)
        pred = np.zeros((h, w), dtype=np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        for m, jitter in ((gt, 0), (pred, 1)):
            cy, cx = h / 2 + jitter * rng.normal(0, h / 15), w / 2 + jitter * rng.normal(0, w / 15)
            ry, rx = h / 4 * (1 + 0.2 * jitter * rng.normal()), w / 5
            m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
        expected = _toolkit_f(pred, gt)
        assert f_measure(pred, gt) == pytest.approx(expected, abs=1e-12)


def test_evaluate_davis_with_the_default_model_on_a_generated_sequence(tmp_path):
    """End to end with the video default (the training-free model): a generated clip laid out as DAVIS."""
    pytest.importorskip("skimage")
    from sgone.predictor import Predictor
    from sgone.video import synthetic_clip, write_clip

    root = tmp_path / "DAVIS"
    write_clip(root / "JPEGImages" / "480p" / "cat", synthetic_clip(8, (96, 128), seed=1), image_format="jpg",
               masks_folder=root / "Annotations" / "480p" / "cat")
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("cat\n")
    from sgone.video.model import DEFAULT_VIDEO_MODEL

    res = evaluate_davis(Predictor(DEFAULT_VIDEO_MODEL, size=None), root, tmp_path / "out", progress=False)
    assert res["sequences"]["cat"]["frames_scored"] == 6
    assert res["J_mean"] > 0.4 and 0.0 < res["F_mean"] <= 1.0  # the object is tracked (copying frame 0 scores ~0.1)
    assert res["model"] == "prototype-mobilenet_v2"
    assert (tmp_path / "out" / "results.md").read_text().count("| cat |") == 1


def test_evaluate_command_scores_a_train_split_of_every_second_frame_in_every_mode(tmp_path, capsys):
    """`sgone evaluate --dataset davis2016 --split train --mode all` on a copy that keeps frames 0, 2, 4, ...
    (as the shared train clips) with only ImageSets/480p/train.txt; a missing split is a one-line error."""
    pytest.importorskip("skimage")
    from sgone.cli import main
    from sgone.io import save_image, write_mask_png
    from sgone.video import MODES, synthetic_clip

    root = tmp_path / "DAVIS"
    lines = []
    for i, (frame, mask) in enumerate(synthetic_clip(10, (64, 96), seed=1)):
        if i % 2:
            continue
        save_image(root / "JPEGImages" / "480p" / "cat" / f"{i:05d}.jpg", frame)
        write_mask_png(root / "Annotations" / "480p" / "cat" / f"{i:05d}.png", mask)
        lines.append(f"/JPEGImages/480p/cat/{i:05d}.jpg /Annotations/480p/cat/{i:05d}.png\n")
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "train.txt").write_text("".join(lines))
    out = tmp_path / "out"
    assert main(["evaluate", "--dataset", "davis2016", "--root", str(root), "--split", "train", "--mode", "all",
                 "--size", "0", "--device", "cpu", "--quiet", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    for mode in MODES:
        assert f"davis2016 train (1 sequences), mode {mode}: J&F" in printed
        res = json.loads((out / mode / "results.json").read_text())
        assert res["sequences"]["cat"]["frames_scored"] == 3  # 5 frames given (0, 2, ..., 8): first and last not scored
        assert res["mode"] == mode and res["split"] == "train"
    assert main(["evaluate", "--dataset", "davis2016", "--root", str(root), "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sgone evaluate: error: ") and "val.txt: split list not found" in err and "\n" not in err
    assert not (tmp_path / "o2").exists()


def test_evaluate_davis_refuses_an_incomplete_sequence_before_predicting(tmp_path):
    root = tmp_path / "DAVIS"
    masks = make_davis(root, ["good", "holed"], n_frames=5)
    (root / "Annotations" / "480p" / "holed" / "00003.png").unlink()
    predictor = OraclePredictor(masks)
    with pytest.raises(SgoneError, match=r"holed: no annotation for 1 frame\(s\), e\.g\. 00003\.png"):
        evaluate_davis(predictor, root, tmp_path / "out", sequences=["good", "holed"], progress=False, mode="independent")
    assert predictor.supports == 0  # not after the first sequence was run


def test_evaluate_command_checks_the_sequences_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from sgone.cli import main

    root = tmp_path / "DAVIS"
    make_davis(root, ["good", "bare"], n_frames=4)
    import shutil

    shutil.rmtree(root / "Annotations" / "480p" / "bare")
    monkeypatch.setattr("sgone.video.model.video_predictor", lambda *a, **k: pytest.fail("model loaded"))
    code = main(["evaluate", "--dataset", "davis2016", "--root", str(root), "--sequences", "good,bare",
                 "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "bare: annotation folder not found" in err


def test_evaluate_davis_keeps_the_finished_sequences_of_a_stopped_run(tmp_path):
    root = tmp_path / "DAVIS"
    masks = make_davis(root, ["first", "second"], n_frames=5)
    broken = root / "JPEGImages" / "480p" / "second" / "00003.png"
    broken.write_bytes(broken.read_bytes()[:60])  # a valid header (the up-front check passes), truncated data
    with pytest.raises(SgoneError, match=r"second/00003\.png"):
        evaluate_davis(OraclePredictor(masks), root, tmp_path / "out", sequences=["first", "second"],
                       progress=False, mode="independent")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["completed"] is False and list(saved["sequences"]) == ["first"]
    assert saved["overall"]["J"]["mean"] == 1.0
    assert "Incomplete run" in (tmp_path / "out" / "results.md").read_text()
    res = evaluate_davis(OraclePredictor(masks), root, tmp_path / "ok", sequences=["first"], progress=False, mode="independent")
    assert res["completed"] is True and "Incomplete" not in (tmp_path / "ok" / "results.md").read_text()
