"""DAVIS-2016 J&F of every video mode, on all clips of a split, on the tuning clips and on the
clips not used for tuning, with per-clip tables and a contact sheet of the worst clip.

It reads the results folders that `sgone evaluate --dataset davis2016 --mode M --save-masks`
wrote (one per mode; run two at a time with OMP_NUM_THREADS=1 on a 2-core machine), so every
figure comes from that command:

    for m in independent propagate temporal; do
        OMP_NUM_THREADS=1 sgone evaluate --dataset davis2016 --root ../shared/data/davis2016-train \\
            --split train --mode $m --save-masks --output runs/davis-train/$m
    done
    python benchmarks/davis_modes.py --runs runs/davis-train --root ../shared/data/davis2016-train \\
        --tune docs/splits/davis2016-tune.txt --sheet docs/img/davis_worst_clip.jpg

The frames/s printed here are those of the evaluation (model and scoring); the end-to-end
rate of `sgone video` at 854x480 is measured by `benchmarks/video_speed.py`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def subset_means(results: dict, names: list[str]) -> dict[str, float]:
    """Means over `names` of the per-sequence statistics (as the overall row, restricted)."""
    seqs = [results["sequences"][n] for n in names if n in results["sequences"]]
    out = {f"{m} {s}": float(np.mean([q[m][s] for q in seqs])) for m in ("J", "F") for s in ("mean", "recall", "decay")}
    out["J&F"] = (out["J mean"] + out["F mean"]) / 2
    out["clips"] = len(seqs)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="folder holding one results folder per mode (<runs>/<mode>/results.json)")
    parser.add_argument("--root", default=None, help="DAVIS folder (for the contact sheet)")
    parser.add_argument("--tune", required=True, help="the tuning clips (a file, one name a line)")
    parser.add_argument("--sheet", default=None, help="write the worst clip's contact sheet here (needs --root and saved masks)")
    parser.add_argument("--sheet-mode", default=None, help="mode whose worst clip is drawn (default: sgone video's default)")
    parser.add_argument("--frames", type=int, default=5, help="frames in the contact sheet (default 5)")
    args = parser.parse_args(argv)

    from sgone.data.davis import read_sequence_list
    from sgone.video.tracker import DEFAULT_MODE, MODES

    runs = Path(args.runs)
    results = {m: json.loads((runs / m / "results.json").read_text()) for m in MODES if (runs / m / "results.json").is_file()}
    if not results:
        print(f"no results under {runs}/<mode>/results.json", file=sys.stderr)
        return 2
    partial = [m for m, r in results.items() if r.get("completed") is False]
    if partial:  # an error or Ctrl-C stopped those runs: their means cover only some clips
        print(f"incomplete runs (completed: false): {', '.join(f'{runs}/{m}' for m in partial)}; run them again", file=sys.stderr)
        return 2
    tune = read_sequence_list(args.tune)
    every = sorted(next(iter(results.values()))["sequences"])
    held = [n for n in every if n not in tune]
    print(f"# DAVIS-2016 {next(iter(results.values())).get('split')}: {len(every)} clips, {len(tune)} tuning, {len(held)} held out\n")
    print("| mode | clips | J&F | J mean | J recall | J decay | F mean | F recall | F decay | frames/s (eval) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, names in (("all", every), ("tuning", tune), ("held out", held)):
        for mode, r in results.items():
            s = subset_means(r, names)
            cells = " | ".join(f"{100 * s[k]:.1f}" for k in ("J&F", "J mean", "J recall", "J decay", "F mean", "F recall", "F decay"))
            print(f"| {mode} | {label} ({s['clips']}) | {cells} | {r.get('fps') or 0:.2f} |")
    print("\n## per clip (J&F / J / F mean, percent; * = tuning clip)\n")
    print("| clip | frames | " + " | ".join(results) + " |")
    print("|---|---:|" + "---:|" * len(results))
    for name in every:
        cells = []
        for r in results.values():
            q = r["sequences"][name]
            cells.append(f"{50 * (q['J']['mean'] + q['F']['mean']):.1f} / {100 * q['J']['mean']:.1f} / {100 * q['F']['mean']:.1f}")
        frames = next(iter(results.values()))["sequences"][name]["frames_scored"]
        print(f"| {name}{' *' if name in tune else ''} | {frames} | " + " | ".join(cells) + " |")
    if args.sheet:
        mode = args.sheet_mode or DEFAULT_MODE
        worst = min(results[mode]["sequences"], key=lambda n: sum(results[mode]["sequences"][n][m]["mean"] for m in ("J", "F")))
        path = contact_sheet(args.root, runs, list(results), worst, args.frames, Path(args.sheet))
        print(f"\nworst clip of {mode}: {worst}; contact sheet {path}")
    return 0


def contact_sheet(root: str, runs: Path, modes: list[str], name: str, n: int, out: Path) -> Path:
    """Rows: the truth, then each mode's masks; columns: `n` frames spread over the clip."""
    from sgone.data.davis import DavisSource
    from sgone.io import read_mask
    from sgone.viz import overlay, save_png, tile_grid

    seq = DavisSource(root).sequence(name)
    picks = [int(round(i)) for i in np.linspace(1, len(seq) - 2, n)]
    rows, labels = [], []
    drawn = [m for m in modes if (runs / m / "masks" / name).is_dir()]  # modes run with --save-masks
    for who in ["truth", *drawn]:
        row, lab = [], []
        for i in picks:
            image = seq.read_frame(i)
            mask = seq.read_mask(i) if who == "truth" else read_mask(runs / who / "masks" / name / f"{seq.frame_names[i]}.png")
            row.append(overlay(image, (mask == 1).astype(np.uint8)))
            lab.append(f"{who} {seq.frame_names[i]}")
        rows.append(row)
        labels.append(lab)
    sheet = tile_grid(rows, labels, tile=200)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".jpg", ".jpeg"):
        from PIL import Image

        from sgone.io import atomic_path

        with atomic_path(out) as tmp:
            Image.fromarray(sheet).save(tmp, format="JPEG", quality=85)
    else:
        save_png(out, sheet)
    return out


if __name__ == "__main__":
    sys.exit(main())
