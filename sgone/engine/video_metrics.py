"""DAVIS-2016 evaluation: region similarity J, contour accuracy F and their statistics.

The measures follow the DAVIS toolkit (Perazzi et al., CVPR 2016) so that numbers compare with
published ones:
- J = |pred & gt| / |pred | gt|, and 1 when both masks are empty.
- F: one-pixel-wide boundaries from `seg2bmap`; a boundary pixel of one mask counts as matched
  when the other mask's boundary lies within a disk of radius ceil(0.008 * image diagonal)
  (bound_th = 0.008); precision, recall and their harmonic mean. Both empty -> 1; one empty -> 0.
- per sequence: mean, recall (fraction of frames with measure > 0.5) and decay (mean over the
  first of 4 temporal bins minus the mean over the last, with the toolkit's bin edges).
- DAVIS-2016 protocol: the first frame (its mask is given) and the last frame are not scored;
  the overall numbers are means over sequences of the per-sequence statistics.

Everything here is numpy only; `evaluate_davis` runs a predictor over a DAVIS tree.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

BOUND_TH = 0.008
MEASURES = ("J", "F")
STATISTICS = ("mean", "recall", "decay")


def _binary(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    return mask.astype(bool) if mask.dtype == bool else mask > 0


def jaccard(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J (IoU) of two binary masks; 1.0 when both are empty (toolkit rule)."""
    p, g = _binary(pred), _binary(gt)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    keep = np.ones_like(p) if void is None else ~_binary(void)
    inter = np.count_nonzero(p & g & keep)
    union = np.count_nonzero((p | g) & keep)
    return 1.0 if union == 0 else inter / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask, as the DAVIS toolkit's `seg2bmap`.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour;
    the last row compares east only, the last column south only, the corner never.
    """
    seg = _binary(seg)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _shift_or(out: np.ndarray, src: np.ndarray, dy: int, dx: int) -> None:
    """out |= src moved by (dy, dx), pixels moved past the border dropped (zero padding)."""
    h, w = src.shape
    if abs(dy) >= h or abs(dx) >= w:
        return
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] |= src[ys, xs]


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by the disk {dx^2 + dy^2 <= radius^2} (skimage's `disk`), zero border.

    Decomposed into horizontal runs: the disk is a stack of rows of half-width
    floor(sqrt(r^2 - dy^2)), so one horizontal dilation per half-width plus one vertical shift
    per row replaces the ~pi r^2 shifts of the naive form.
    """
    src = _binary(mask)
    radius = int(radius)
    if radius <= 0:
        return src.copy()
    # horizontal[k] = src dilated by the segment [-k, k]
    horizontal = [src]
    for k in range(1, radius + 1):
        h = horizontal[-1].copy()
        _shift_or(h, src, 0, k)
        _shift_or(h, src, 0, -k)
        horizontal.append(h)
    out = np.zeros_like(src)
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        _shift_or(out, horizontal[half], dy, 0)
    return out


def boundary_radius(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """Matching tolerance in pixels: bound_th >= 1 is taken as pixels, else a fraction of the diagonal."""
    if bound_th >= 1:
        return int(round(bound_th))
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def f_measure(
    pred: np.ndarray,
    gt: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
    return_pr: bool = False,
) -> float | tuple[float, float, float]:
    """Contour accuracy F of the DAVIS toolkit (`db_eval_boundary` / `f_measure`).

    Returns F, or (F, precision, recall) with `return_pr`.
    """
    p, g = _binary(pred), _binary(gt)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    if void is not None:
        keep = ~_binary(void)
        p, g = p & keep, g & keep
    radius = boundary_radius(p.shape, bound_th)
    fg_boundary = seg2bmap(p)
    gt_boundary = seg2bmap(g)
    n_fg = int(np.count_nonzero(fg_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))
    # the toolkit's conventions for empty boundaries
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        fg_match = np.count_nonzero(fg_boundary & dilate_disk(gt_boundary, radius))
        gt_match = np.count_nonzero(gt_boundary & dilate_disk(fg_boundary, radius))
        precision, recall = fg_match / n_fg, gt_match / n_gt
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return (f, precision, recall) if return_pr else f


def statistics(values: Sequence[float], threshold: float = 0.5, n_bins: int = 4) -> dict[str, float]:
    """Mean, recall (fraction of values > threshold) and decay of one sequence's per-frame values.

    Decay uses the toolkit's bins: edges round(linspace(1, n, n_bins + 1)) - 1, bin i spanning
    [edge_i, edge_{i+1}] inclusive (neighbouring bins share their edge frame), and is the mean of
    the first bin minus the mean of the last. NaN for an empty sequence.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {"mean": math.nan, "recall": math.nan, "decay": math.nan}
    # the toolkit casts the edges to uint8, which wraps past 255 frames; plain ints do not
    ids = (np.round(np.linspace(1, len(x), n_bins + 1) + 1e-10) - 1).astype(np.int64)
    bins = [x[ids[i] : ids[i + 1] + 1] for i in range(n_bins)]
    return {
        "mean": float(np.nanmean(x)),
        "recall": float(np.mean(x > threshold)),
        "decay": float(np.nanmean(bins[0]) - np.nanmean(bins[-1])),
    }


def score_frames(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray], bound_th: float = BOUND_TH) -> dict[str, list[float]]:
    """Per-frame J and F of paired masks (no frames dropped: the caller applies the protocol)."""
    out: dict[str, list[float]] = {"J": [], "F": []}
    for p, g in zip(preds, gts, strict=True):
        out["J"].append(jaccard(p, g))
        out["F"].append(float(f_measure(p, g, bound_th=bound_th)))
    return out


def summarize_sequences(per_frame: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Statistics per sequence and overall (means over sequences), from already-protocol-trimmed
    per-frame values {sequence: {"J": [...], "F": [...]}}."""
    sequences: dict[str, Any] = {}
    for name, values in per_frame.items():
        sequences[name] = {m: statistics(values[m]) for m in MEASURES}
        sequences[name]["frames_scored"] = len(values["J"])
    overall: dict[str, Any] = {}
    for m in MEASURES:
        overall[m] = {}
        for stat in STATISTICS:
            vals = [sequences[s][m][stat] for s in sequences if not math.isnan(sequences[s][m][stat])]
            overall[m][stat] = float(np.mean(vals)) if vals else math.nan
    overall["J&F"] = (overall["J"]["mean"] + overall["F"]["mean"]) / 2
    return {"sequences": sequences, "overall": overall}


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def results_markdown(results: dict[str, Any]) -> str:
    """A Markdown report: one row per sequence and an overall row (values in percent)."""
    lines = [
        f"# DAVIS-2016 ({results.get('split', 'val')}), mode `{results.get('mode', '?')}`",
        "",
        f"Model: `{results.get('model', '?')}`. {results.get('protocol', '')}",
        "",
        *(["**Incomplete run** (stopped by an error or interrupted): only the sequences below were scored.", ""]
          if results.get("completed") is False else []),
        "| sequence | frames | J mean | J recall | J decay | F mean | F recall | F decay |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, frames: Any, r: dict[str, Any]) -> str:
        cells = [_fmt(r[m][s]) for m in MEASURES for s in STATISTICS]
        return f"| {name} | {frames} | " + " | ".join(cells) + " |"

    for name, r in results["sequences"].items():
        lines.append(row(name, r.get("frames_scored", ""), r))
    ov = results["overall"]
    lines.append(row("**mean**", sum(r.get("frames_scored", 0) for r in results["sequences"].values()), ov))
    lines += ["", f"J&F mean: {_fmt(ov['J&F'])}"]
    if results.get("fps"):
        lines.append(f"Speed: {results['fps']:.2f} frames/s ({results.get('device', 'cpu')}).")
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_results(results: dict[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write results.json and results.md into output_dir, each atomically."""
    from sgone.io import atomic_write

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    atomic_write(json_path, json.dumps(_jsonable(results), indent=2) + "\n")
    atomic_write(md_path, results_markdown(results))
    return json_path, md_path


def _model_name(predictor: Any) -> str:
    """A readable model description: "<arch>-<backbone>" from the model's config when it has one."""
    model = getattr(predictor, "model", None)
    config = getattr(model, "config", None)
    if isinstance(config, dict) and config.get("backbone"):
        return f"{config.get('arch', 'model')}-{config['backbone']}"
    return type(model if model is not None else predictor).__name__


def evaluate_davis(
    predictor: Any,
    root: str | Path,
    output_dir: str | Path,
    mode: str | None = None,
    sequences: Sequence[str] | None = None,
    *,
    split: str = "val",
    save_masks: bool = False,
    progress: bool = True,
    config: Any = None,
    propagation: Any = None,
) -> dict[str, Any]:
    """Run one-shot video segmentation over DAVIS-2016 sequences and score it.

    predictor: a `sgone.predictor.Predictor`. Each sequence's first-frame mask is the support;
    every later frame is a query, segmented by the video `mode` (default: `sgone video`'s, see
    `sgone.video.tracker`) with its `config` (None = the mode's defaults; `propagation` is the
    older name of a propagate config). `sequences` defaults to the `split` list.
    Writes results.json and results.md into output_dir (and masks/<seq>/<frame>.png with
    `save_masks`); returns the results dict. Frames stream: one frame in memory at a time.
    When a frame cannot be read or the run is interrupted, the sequences finished so far are
    written with "completed": false (and the report says so) before the error goes on.
    """
    from tqdm import tqdm

    from sgone.data.davis import DavisSource
    from sgone.video.tracker import DEFAULT_MODE, check_mode, make_tracker, run_tracker

    mode = mode or DEFAULT_MODE
    config = config if config is not None else propagation
    check_mode(mode)  # an unknown mode fails before any frame is read
    source = DavisSource(root)
    names = list(sequences) if sequences else source.sequences(split)
    source.require(names)  # every sequence is complete before the first frame is predicted
    seqs = [source.sequence(n) for n in names]
    settings: dict[str, Any] = {}
    per_frame: dict[str, dict[str, list[float]]] = {}
    out = Path(output_dir)
    total = sum(len(s) - 1 for s in seqs)
    start = time.perf_counter()
    n_pred = 0
    done = False
    try:
        with tqdm(total=total, unit="frame", desc=f"davis2016 {mode}", disable=not progress) as bar:
            for seq in seqs:
                bar.set_postfix_str(seq.name)
                image0, mask0 = seq.first()
                values: dict[str, list[float]] = {"J": [], "F": []}
                last = len(seq) - 1
                tracker = make_tracker(predictor, mode, config)
                settings = getattr(tracker.config, "as_dict", dict)()
                for i, (name, pred) in enumerate(run_tracker(tracker, image0, mask0, seq.frames(start=1)), start=1):
                    n_pred += 1
                    bar.update(1)
                    if save_masks:
                        from sgone.io import write_mask_png

                        (out / "masks" / seq.name).mkdir(parents=True, exist_ok=True)
                        write_mask_png(out / "masks" / seq.name / f"{name}.png", pred.mask)
                    if i == last:
                        continue  # the DAVIS-2016 protocol does not score the last frame
                    gt = seq.read_mask(i)
                    values["J"].append(jaccard(pred.mask, gt))
                    values["F"].append(float(f_measure(pred.mask, gt)))
                per_frame[seq.name] = values
        done = True
    finally:
        # after an error or Ctrl-C the finished sequences are written too, marked incomplete
        elapsed = time.perf_counter() - start
        results: dict[str, Any] = {
            "dataset": "davis2016",
            "split": split if not sequences else "custom",
            "mode": mode,
            "completed": done,
            "model": _model_name(predictor),
            "input_size": getattr(predictor, "size", None),
            "device": str(getattr(predictor, "device", "cpu")),
            "protocol": "One-shot: first-frame mask as the only given annotation; first and last frames not scored "
            f"(DAVIS-2016); F with bound_th={BOUND_TH}; overall = mean over sequences.",
            "propagation": settings if mode == "propagate" else None,
            "settings": settings,
            "fps": n_pred / elapsed if elapsed > 0 else None,
            "seconds": elapsed,
        }
        results.update(summarize_sequences(per_frame))
        # flat headline numbers (percent-free fractions) for callers that print a one-line summary
        for m in MEASURES:
            for stat in STATISTICS:
                results[f"{m}_{stat}"] = results["overall"][m][stat]
        results["JF_mean"] = results["overall"]["J&F"]
        results["per_frame"] = per_frame
        if done or per_frame:
            write_results(results, out)
    return results
