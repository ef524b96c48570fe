"""One-shot video segmentation: frame I/O, outputs, bad frames, interruption, streaming, tracking."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from sgone.errors import SgoneError
from sgone.video import (
    MODES,
    FrameFolder,
    Mp4Writer,
    PreviewWriter,
    PropagationConfig,
    VideoFile,
    confident_mask,
    erode_square,
    erosion_depth,
    update_mask,
    open_frames,
    run_video,
    synthetic_clip,
    track,
    write_clip,
)

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


# ----------------------------------------------------------------------------- helpers
class _Pred:
    def __init__(self, mask, probability):
        self.mask = mask
        self.probability = probability
        self.similarity = probability


class BrightPredictor:
    """A stand-in predictor: the object is the bright square of `bright_clip` frames."""

    def __init__(self, fail_at=None):
        self.fail_at = fail_at
        self.calls = 0
        self.supports = 0
        self.updates = []

    def set_support(self, images, masks):
        self.supports += 1

    def predict(self, image):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt
        prob = (image.mean(axis=2) / 255.0).astype(np.float32)
        return _Pred((prob > 0.5).astype(np.uint8), prob)

    def update_support(self, mask, weight=0.2):
        self.updates.append((int((mask == 1).sum()), weight))


def bright_clip(n, shape=(48, 64)):
    """Dark frames with a bright square moving right, exact masks."""
    for i in range(n):
        img = np.full(shape + (3,), 30, dtype=np.uint8)
        m = np.zeros(shape, dtype=np.uint8)
        m[10:26, 4 + 2 * i:20 + 2 * i] = 1
        img[m == 1] = 220
        yield img, m


def make_folder(tmp_path, n=6, fmt="png", clip=None):
    frames = tmp_path / "frames"
    masks = tmp_path / "truth"
    write_clip(frames, clip if clip is not None else bright_clip(n), image_format=fmt, masks_folder=masks)
    return frames, masks / "00000.png"


def read_png(path):
    im = Image.open(path)
    return im.mode, np.asarray(im)


# ----------------------------------------------------------------------------- frame sources
def test_folder_sorts_numbers_as_numbers_and_streams(tmp_path):
    for name in ("frame10.png", "frame2.png", "frame1.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    src = FrameFolder(tmp_path)
    frames = iter(src)
    first = next(frames)  # lazily read: one frame at a time
    assert first.name == "frame1"
    # 1, 2, 10 is not a uniform numbering with gaps of one step each... gcd(1, 8) = 1 -> 3..9 missing
    names = [first.name] + [f.name for f in frames]
    assert names[:2] == ["frame1", "frame2"] and names[-1] == "frame10"


def test_folder_reports_missing_and_corrupt_frames_by_name(tmp_path):
    for i in (0, 1, 3, 4):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{i:05d}.jpg")
    (tmp_path / "00004.jpg").write_bytes(b"\xff\xd8 broken")
    frames = list(FrameFolder(tmp_path))
    assert [f.name for f in frames] == ["00000", "00001", "00002", "00003", "00004"]
    assert frames[2].image is None and "00002" in frames[2].error and "missing" in frames[2].error
    assert frames[4].image is None and "00004.jpg" in frames[4].error
    assert frames[3].image is not None and frames[3].error is None


def test_folder_errors(tmp_path):
    with pytest.raises(SgoneError, match="not found"):
        FrameFolder(tmp_path / "nope")
    with pytest.raises(SgoneError, match="no image frames"):
        FrameFolder(tmp_path)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.jpg")
    with pytest.raises(SgoneError, match="share the name"):
        FrameFolder(tmp_path)
    with pytest.raises(SgoneError, match="single image"):
        open_frames(tmp_path / "a.png")


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".avi", "mpeg4"), (".webm", "libvpx-vp9")])
def test_video_files_decode_frame_by_frame(tmp_path, suffix, codec):
    path = tmp_path / f"clip{suffix}"
    gen = imageio_ffmpeg.write_frames(str(path), (64, 48), fps=10, codec=codec, macro_block_size=1, ffmpeg_log_level="error")
    gen.send(None)
    for img, _ in bright_clip(8):
        gen.send(np.ascontiguousarray(img))
    gen.close()
    src = open_frames(path)
    assert isinstance(src, VideoFile)
    assert (src.width, src.height) == (64, 48) and src.fps == pytest.approx(10)
    frames = list(src)
    assert len(frames) == 8 and [f.name for f in frames[:2]] == ["00000", "00001"]
    assert frames[3].image.shape == (48, 64, 3)
    # the square is still where it was drawn (lossy codecs keep it clearly)
    assert frames[3].image[18, 15].mean() > 150 and frames[3].image[40, 60].mean() < 80


def test_corrupt_video_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with pytest.raises(SgoneError, match="broken.mp4: cannot decode video"):
        open_frames(bad)
    with pytest.raises(SgoneError, match="not found"):
        open_frames(tmp_path / "missing.mp4")


# ----------------------------------------------------------------------------- writers
def test_mp4_writer_pads_odd_sizes_and_is_atomic(tmp_path):
    w = Mp4Writer(tmp_path / "o.mp4", (63, 47), fps=12)
    for _ in range(5):
        w.write(np.zeros((47, 63, 3), np.uint8))
    assert not (tmp_path / "o.mp4").exists()  # only the partial file while writing
    assert w.close(ok=True) == tmp_path / "o.mp4"
    src = VideoFile(tmp_path / "o.mp4")
    assert (src.width, src.height) == (64, 48) and len(list(src)) == 5


def test_preview_memory_is_bounded(tmp_path):
    p = PreviewWriter(tmp_path / "p.gif", fps=24, max_side=32, max_frames=20)
    frame = np.zeros((64, 96, 3), np.uint8)
    for i in range(1000):
        frame[:] = i % 255
        p.add(frame)
        assert len(p.frames) <= 20
    assert p.stride >= 1000 // 20 // 2 and p.frames[0].shape == (21, 32, 3)
    p.close()
    im = Image.open(tmp_path / "p.gif")
    assert im.n_frames > 5 and im.is_animated


def test_webp_preview(tmp_path):
    p = PreviewWriter(tmp_path / "p.webp", fps=10)
    for i in range(4):
        p.add(np.full((20, 30, 3), 60 * i, np.uint8))
    p.close()
    im = Image.open(tmp_path / "p.webp")
    assert im.format == "WEBP" and im.n_frames == 4


# ----------------------------------------------------------------------------- propagate mask
def test_confident_mask_core_band_and_background():
    prob = np.zeros((40, 40), np.float32)
    prob[10:30, 10:30] = 0.9  # a 20x20 confident object
    r = erosion_depth(prob >= 0.8, 0.5)
    assert r == 2  # 16x16 = 256 >= 200 kept; 14x14 = 196 < 200
    conf = confident_mask(prob, high=0.8, core=0.5, margin=1.0)
    assert (conf == 1).sum() == 16 * 16 and conf[20, 20] == 1
    assert conf[10, 10] == 255 and conf[8, 20] == 255  # the rim and a band of r outside: ignored
    assert conf[7, 20] == 0 and conf[0, 0] == 0  # farther than r from the object: background
    assert set(np.unique(confident_mask(np.zeros((8, 8)), 0.8))) == {0}


@pytest.mark.parametrize("border", [True, False])
def test_erode_square_matches_a_naive_erosion(border):
    rng = np.random.default_rng(1)
    m = rng.random((23, 31)) > 0.15
    for r in range(5):
        padded = np.pad(m, r, constant_values=border)
        naive = np.ones_like(m)
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                naive &= padded[dy:dy + m.shape[0], dx:dx + m.shape[1]]
        assert np.array_equal(erode_square(m, r, border), naive)


def test_update_mask_is_built_small_and_returned_at_full_size():
    prob = np.zeros((480, 854), np.float32)
    prob[100:300, 200:500] = 0.95
    conf = update_mask(prob, PropagationConfig(), expected_area=200 * 300)
    assert conf.shape == (480, 854)
    assert conf[200, 350] == 1 and conf[0, 0] == 0 and conf[100, 200] == 255
    core = conf == 1
    assert 0.3 < core.sum() / (200 * 300) <= 0.55  # about `core` (0.5) of the object, on a 4-px grid


def test_track_encodes_the_support_once_and_updates_in_propagate():
    clip = list(bright_clip(5))
    for mode in ("independent", "propagate"):
        pred = BrightPredictor()
        stats = {}
        out = list(track(pred, clip[0][0], clip[0][1], ((str(i), f) for i, (f, m) in enumerate(clip[1:])), mode=mode, stats=stats))
        assert len(out) == 4 and pred.supports == 1
        if mode == "independent":
            assert pred.updates == []
        else:
            # the "average" schedule: weight / (1 + weight * t)
            assert [w for _, w in pred.updates] == pytest.approx([0.2 / (1 + 0.2 * t) for t in range(4)])
            assert stats["updates"] == 4
    with pytest.raises(SgoneError, match="unknown video mode"):
        list(track(BrightPredictor(), clip[0][0], clip[0][1], [], mode="nope"))


def test_propagate_skips_frames_where_the_object_is_lost():
    clip = list(bright_clip(3))
    dark = np.full_like(clip[1][0], 30)  # object gone (occluded): nothing confident
    pred = BrightPredictor()
    stats = {}
    list(track(pred, clip[0][0], clip[0][1], [("a", dark), ("b", clip[2][0])], mode="propagate", stats=stats))
    assert stats == {"updates": 1, "skipped_updates": 1}


def test_propagate_does_not_learn_from_a_spilled_mask():
    clip = list(bright_clip(3))
    spill = clip[1][0].copy()
    spill[5:40, 0:50] = 220  # the "object" is suddenly 6x larger: background taken for object
    pred = BrightPredictor()
    stats = {}
    list(track(pred, clip[0][0], clip[0][1], [("a", spill), ("b", clip[2][0])], mode="propagate", stats=stats))
    assert stats == {"updates": 1, "skipped_updates": 1} and len(pred.updates) == 1


# ----------------------------------------------------------------------------- run_video
def test_run_video_writes_masks_overlay_preview_summary(tmp_path):
    frames, mask = make_folder(tmp_path, n=6)
    s = run_video(BrightPredictor(), frames, mask, tmp_path / "out", progress=False, mode="independent")
    out = tmp_path / "out"
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"{i:05d}.png" for i in range(6)]
    for i, (img, m) in enumerate(bright_clip(6)):
        mode, arr = read_png(out / "masks" / f"{i:05d}.png")
        assert mode == "L" and arr.dtype == np.uint8 and arr.shape == m.shape
        assert set(np.unique(arr)) <= {0, 255} and np.array_equal(arr == 255, m == 1)
    video = VideoFile(out / "overlay.mp4")
    assert len(list(video)) == 6 and video.fps == pytest.approx(24)
    gif = Image.open(out / "preview.gif")
    assert gif.is_animated and gif.n_frames == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["masks_written"] == 6 and summary["frames_processed"] == 5
    assert s.fps > 0 and not s.skipped


def test_run_video_every_n_and_video_input(tmp_path):
    # a video file in, every 3rd frame out: 0, 3, 6, 9
    path = tmp_path / "clip.mp4"
    w = Mp4Writer(path, (64, 48), fps=30)
    clip = list(bright_clip(10))
    for img, _ in clip:
        w.write(img)
    w.close()
    Image.fromarray(clip[0][1] * 255).save(tmp_path / "m.png")
    s = run_video(BrightPredictor(), path, tmp_path / "m.png", tmp_path / "out", every=3, preview="none", progress=False, mode="independent")
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["00000.png", "00003.png", "00006.png", "00009.png"]
    assert s.frames_in_input == 10 and VideoFile(tmp_path / "out" / "overlay.mp4").fps == pytest.approx(10)
    _, m9 = read_png(tmp_path / "out" / "masks" / "00009.png")
    assert (np.logical_and(m9 == 255, clip[9][1] == 1).sum() / (clip[9][1] == 1).sum()) > 0.9
    assert not (tmp_path / "out" / "preview.gif").exists()


def test_bad_frames_stop_or_skip_never_silently(tmp_path):
    frames, mask = make_folder(tmp_path, n=6)
    (frames / "00003.png").write_bytes(b"\x89PNG broken")
    (frames / "00004.png").unlink()
    with pytest.raises(SgoneError, match=r"00003\.png.*--on-bad-input skip"):
        run_video(BrightPredictor(), frames, mask, tmp_path / "stop", progress=False, mode="independent", preview="none")
    # masks written before the stop stay valid
    assert sorted(p.name for p in (tmp_path / "stop" / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert json.loads((tmp_path / "stop" / "summary.json").read_text())["completed"] is False
    reports = []
    s = run_video(BrightPredictor(), frames, mask, tmp_path / "skip", on_bad_frame="skip", progress=False, mode="independent", report=reports.append)
    assert [d["frame"] for d in s.skipped] == ["00003", "00004"]
    assert "00003.png" in s.skipped[0]["reason"] and "missing" in s.skipped[1]["reason"]
    assert len(reports) == 2 and "00003" in reports[0]
    assert sorted(p.name for p in (tmp_path / "skip" / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png", "00005.png"]
    assert json.loads((tmp_path / "skip" / "summary.json").read_text())["skipped"][0]["frame"] == "00003"


def test_bad_first_frame_and_mask_errors(tmp_path):
    frames, mask = make_folder(tmp_path, n=3)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(SgoneError, match="small.png: mask is 10x10 but the first frame is 64x48"):
        run_video(BrightPredictor(), frames, tmp_path / "small.png", tmp_path / "o", progress=False, mode="independent")
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(SgoneError, match="no object pixels"):
        run_video(BrightPredictor(), frames, tmp_path / "empty.png", tmp_path / "o", progress=False, mode="independent")
    write_clip(tmp_path / "x" / "masks", bright_clip(2))
    with pytest.raises(SgoneError, match="masks would overwrite frames"):
        run_video(BrightPredictor(), tmp_path / "x" / "masks", mask, tmp_path / "x", progress=False, mode="independent")
    (frames / "00000.png").write_bytes(b"junk")
    with pytest.raises(SgoneError, match="00000.png.*cannot be skipped"):
        run_video(BrightPredictor(), frames, mask, tmp_path / "o", on_bad_frame="skip", progress=False, mode="independent")


def test_interrupted_run_leaves_only_valid_masks(tmp_path):
    frames, mask = make_folder(tmp_path, n=8)
    with pytest.raises(KeyboardInterrupt):
        run_video(BrightPredictor(fail_at=4), frames, mask, tmp_path / "out", progress=False, mode="independent")
    out = tmp_path / "out"
    files = sorted(p.name for p in (out / "masks").iterdir())
    assert files == ["00000.png", "00001.png", "00002.png", "00003.png"]  # no temp files left
    for name in files:
        mode, arr = read_png(out / "masks" / name)
        assert mode == "L" and set(np.unique(arr)) <= {0, 255}
    assert not (out / "overlay.mp4").exists()
    assert len(list(VideoFile(out / "overlay.partial.mp4"))) == 4  # what was done stays watchable
    assert json.loads((out / "summary.json").read_text())["completed"] is False


def test_memory_does_not_grow_with_the_number_of_frames(tmp_path):
    def peak(n):
        frames = tmp_path / f"f{n}"
        write_clip(frames, bright_clip(n, shape=(96, 128)))
        Image.fromarray(next(bright_clip(1, shape=(96, 128)))[1] * 255).save(tmp_path / "m.png")
        tracemalloc.start()
        run_video(BrightPredictor(), frames, tmp_path / "m.png", tmp_path / f"o{n}", progress=False, mode="independent", preview_frames=8)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(20), peak(120)
    # 100 more frames of 96x128x3 would be 3.7 MB if they were kept
    assert large < small + 1_000_000


# ----------------------------------------------------------------------------- the CLI
def test_cli_video_errors_are_one_line(tmp_path, capsys):
    from sgone.cli import main

    frames, mask = make_folder(tmp_path, n=3)
    assert main(["video", "--input", str(tmp_path / "none"), "--support-mask", str(mask), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "input not found" in err and "Traceback" not in err
    assert main(["video", "--input", str(frames), "--support-mask", str(mask), "--output", str(tmp_path / "o"), "--every", "0"]) == 2
    assert "--every 0" in capsys.readouterr().err


@pytest.fixture
def read_only(monkeypatch):
    """make(folder): an existing folder nothing can be written into. Root ignores permission
    bits, so for root the writes into it (temp files, sub-folders) are refused the same way."""
    import os
    import tempfile
    from pathlib import Path

    made = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        made.append(folder)
        if os.geteuid() != 0:
            return folder
        real_mkstemp, real_mkdir = tempfile.mkstemp, Path.mkdir

        def inside(path):
            path = Path(path).resolve()
            return path == folder.resolve() or folder.resolve() in path.parents

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and inside(dir):
                raise PermissionError(13, "Permission denied", str(Path(dir) / "tmp"))
            return real_mkstemp(*args, dir=dir, **kwargs)

        def mkdir(self, *args, **kwargs):
            if inside(self) and not self.exists():
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(Path, "mkdir", mkdir)
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


@pytest.fixture
def bright_cli(monkeypatch):
    """`sgone video` with the stand-in predictor (the command's own checks and writing are real)."""
    from sgone.cli import main

    import torch

    monkeypatch.setattr("sgone.predictor.Predictor", lambda *args, **kwargs: BrightPredictor())
    threads = torch.get_num_threads()  # `sgone video` sets them; the other tests keep theirs
    yield lambda *args: main(["video", *map(str, args), "--quiet", "--mode", "independent"])
    torch.set_num_threads(threads)


def test_cli_video_into_a_read_only_folder_is_one_line(tmp_path, capsys, read_only, bright_cli):
    frames, mask = make_folder(tmp_path, n=3)
    out = read_only(tmp_path / "ro")
    assert bright_cli("--input", frames, "--support-mask", mask, "--output", out) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sgone video: error: {out}: cannot write the output there (Permission denied)"
    with pytest.raises(SgoneError, match="cannot write the output there"):
        run_video(BrightPredictor(), frames, mask, out / "sub", progress=False, mode="independent")


def test_a_bad_first_mask_leaves_no_output_folder(tmp_path, capsys, bright_cli):
    frames, mask = make_folder(tmp_path, n=3)
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    for bad, problem in (("empty.png", "no object pixels"), ("small.png", "use --resize-masks")):
        with pytest.raises(SgoneError, match=problem):
            run_video(BrightPredictor(), frames, tmp_path / bad, tmp_path / "o" / "run", progress=False, mode="independent")
        assert bright_cli("--input", frames, "--support-mask", tmp_path / bad, "--output", tmp_path / "o" / "cli") == 2
        assert problem in capsys.readouterr().err
        assert not (tmp_path / "o").exists()


def test_video_resize_masks_accepts_a_first_mask_of_another_size(tmp_path, bright_cli):
    frames, mask = make_folder(tmp_path, n=3)
    truth = np.asarray(Image.open(mask))
    Image.fromarray(truth).resize((32, 24), Image.NEAREST).save(tmp_path / "half.png")
    assert bright_cli("--input", frames, "--support-mask", tmp_path / "half.png", "--output", tmp_path / "no") == 2
    assert bright_cli("--input", frames, "--support-mask", tmp_path / "half.png", "--output", tmp_path / "out",
                      "--resize-masks", "--no-video", "--preview", "none") == 0
    _, first = read_png(tmp_path / "out" / "masks" / "00000.png")
    expected = np.asarray(Image.fromarray(truth).resize((32, 24), Image.NEAREST).resize((64, 48), Image.NEAREST))
    assert first.shape == (48, 64) and np.array_equal(first == 255, expected > 0)
    assert len(list((tmp_path / "out" / "masks").iterdir())) == 3


# ----------------------------------------------------------------------------- tracking, real model
@pytest.fixture(scope="module")
def generated_clip(tmp_path_factory):
    """12 frames, 96x128: a cat-face crop moving right-to-left and growing 0.8x -> 1.3x over a
    real photo (skimage's coffee), PNG frames (lossless) and exact masks."""
    pytest.importorskip("skimage")
    root = tmp_path_factory.mktemp("clip")
    write_clip(root / "frames", synthetic_clip(12, (96, 128), seed=0), image_format="png", masks_folder=root / "truth")
    return root


def _mean_j(out_masks, truth, n):
    from sgone.engine.video_metrics import jaccard
    from sgone.io import read_mask

    js = [jaccard(read_mask(out_masks / f"{i:05d}.png"), read_mask(truth / f"{i:05d}.png")) for i in range(1, n)]
    return float(np.mean(js)), float(np.min(js))


def test_sgone_video_tracks_the_generated_object_in_every_mode(generated_clip, capsys):
    """The default (training-free) model through `sgone video`, every mode, frames 1..11 scored.

    Level: mean J > 0.40 and every frame > 0.25. Copying the first mask scores 0.14 on this
    clip (the object moves off its first position), so a tracker that loses the object stays
    near 0.14 or 0. Measured with --size 0 (native 96x128, where the object spans only about
    4x5 stride-8 feature cells): independent 0.649, propagate 0.658 with 8 background parts (with
    one background prototype: 0.475 / 0.52; seeds 1 and 2: 0.565/0.569 and 0.59/0.57); 0.40
    leaves room for numeric differences between torch builds. For
    reference SG-One reports 57.3 mean J on DAVIS-2016 with a trained model.
    `propagate` is measured against `independent` and must not fall more than 0.05 below it
    (its first design, which took "probability <= 0.2" as background, lost 0.10 here).
    """
    import torch

    from sgone.cli import main
    from sgone.engine.video_metrics import jaccard
    from sgone.io import read_mask

    frames, truth = generated_clip / "frames", generated_clip / "truth"
    static = np.mean([jaccard(read_mask(truth / "00000.png"), read_mask(truth / f"{i:05d}.png")) for i in range(1, 12)])
    assert static < 0.2
    scores = {}
    for mode in MODES:
        out = generated_clip / f"out-{mode}"
        code = main(["video", "--input", str(frames), "--support-mask", str(truth / "00000.png"), "--output", str(out),
                     "--mode", mode, "--size", "0", "--quiet", "--threads", str(torch.get_num_threads())])
        assert code == 0, capsys.readouterr().err
        scores[mode] = _mean_j(out / "masks", truth, 12)
        assert (out / "overlay.mp4").is_file() and (out / "preview.gif").is_file()
    print(f"\nJ mean/min: {scores}, static {static:.3f}")
    for mode, (mean_j, min_j) in scores.items():
        assert mean_j > 0.40, (mode, scores)
        assert min_j > 0.25, (mode, scores)
    assert scores["propagate"][0] >= scores["independent"][0] - 0.05, scores


def test_cli_video_threads_and_mode_options(tmp_path, capsys, bright_cli, monkeypatch):
    import torch

    from sgone.video.model import default_threads

    frames, mask = make_folder(tmp_path, n=3)
    assert bright_cli("--input", frames, "--support-mask", mask, "--output", tmp_path / "o", "--threads", "0") == 2
    assert capsys.readouterr().err.strip() == "sgone video: error: --threads 0: must be at least 1"
    assert bright_cli("--input", frames, "--support-mask", mask, "--output", tmp_path / "o", "--update-weight", "0.3") == 2
    assert "only for --mode propagate" in capsys.readouterr().err
    assert bright_cli("--input", frames, "--support-mask", mask, "--output", tmp_path / "o", "--threads", "1") == 0
    assert torch.get_num_threads() == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_threads() == 1  # 2 cores: one for the model, one for decoding and encoding
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_threads() == 1


def test_a_read_error_in_the_reader_thread_is_one_line_naming_the_input(tmp_path, monkeypatch):
    import errno
    import threading

    import sgone.io

    frames, mask = make_folder(tmp_path, n=6)
    real = sgone.io.read_image

    def flaky(path, *args, **kwargs):  # the input disk fails on frame 3
        if str(path).endswith("00003.png"):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sgone.io, "read_image", flaky)
    with pytest.raises(SgoneError) as err:
        run_video(BrightPredictor(), frames, mask, tmp_path / "out", progress=False, mode="independent", preview="none")
    message = str(err.value)
    assert message.startswith(str(frames / "00003.png")) and "cannot read the input" in message
    assert "cannot write" not in message and "\n" not in message
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["completed"] is False
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert not any(t.name == "sgone-frame-reader" and t.is_alive() for t in threading.enumerate())


def test_the_cli_parser_and_sgone_video_load_without_torch():
    import subprocess
    import sys

    code = ("import sys; from sgone.cli import build_parser; build_parser(); import sgone.video; "
            "from sgone.video import MODES, DEFAULT_MODE; "
            "assert 'torch' not in sys.modules, 'building the parser pulled in torch'; "
            "from sgone.video import run_video, TemporalConfig; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_second_run_into_the_same_folder_replaces_the_first_and_spares_foreign_files(tmp_path):
    long_clip, mask = make_folder(tmp_path / "long", n=6)
    short_clip, short_mask = make_folder(tmp_path / "short", n=3)
    out = tmp_path / "out"
    run_video(BrightPredictor(), long_clip, mask, out, progress=False, mode="independent", preview="gif")
    run_video(BrightPredictor(), short_clip, short_mask, out, progress=False, mode="independent", preview="none")
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert not (out / "preview.gif").exists()  # the first clip's preview does not pose as the second's
    foreign = tmp_path / "mine"
    (foreign / "masks").mkdir(parents=True)
    (foreign / "masks" / "keep.png").write_bytes(b"not ours")
    with pytest.raises(SgoneError, match=r"masks: holds 1 PNG file\(s\) but .* no summary\.json"):
        run_video(BrightPredictor(), short_clip, short_mask, foreign, progress=False, mode="independent")
    assert (foreign / "masks" / "keep.png").read_bytes() == b"not ours"


def test_frame_outputs_keep_order_bound_the_queue_and_raise_write_errors_in_the_caller():
    import threading
    import time

    from sgone.video.run import FrameOutputs

    seen, threads = [], set()

    def emit(i):
        time.sleep(0.002)
        threads.add(threading.get_ident())
        if i == 7:
            raise OSError(28, "No space left on device")
        seen.append(i)

    outputs = FrameOutputs(emit, ahead=2)
    written = 0
    for i in range(5):
        outputs.submit(i)
        written += outputs.done()
        assert len(outputs.pending) <= 2
    written += outputs.finish()
    assert seen == [0, 1, 2, 3, 4] and written == 5 and threading.get_ident() not in threads
    outputs.submit(7)
    outputs.submit(8)
    with pytest.raises(OSError, match="No space"):
        outputs.finish()
    assert outputs.close() == 1 and seen[-1] == 8  # what was queued behind the error is still written
