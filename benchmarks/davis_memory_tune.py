"""Choose the `memory` video mode's settings by clip-level cross-validation on DAVIS-2016 train.

The clips (name order) fall into `--folds` folds (clip i -> fold i mod folds). For each fold, the
setting with the best mean J&F on the OTHER folds' clips is chosen and scored on the fold's own
clips; the table reports each fold's held-out J&F, their mean and spread (max - min), and the
setting each fold chose. The held-out scores are the honest estimate; the setting chosen on all
clips becomes the default only if every fold chose it or one tied with it.

The network part of each frame (features and prototype probability, which no setting changes) is
computed once per clip and frame step and cached on disk (`--cache`); each setting then replays
the mode's steps over the cached frames and is scored with the DAVIS-2016 protocol (first and
last frame not scored). `--steps 1,2` also scores every second frame of the clips (the shared
clips already hold every second frame, so step 2 is four times the original frame spacing:
faster motion). A setting is scored at every step and ranked by the mean over steps.

    python benchmarks/davis_memory_tune.py --root ../shared/data/davis2016-train --cache /tmp/davis-cache \\
        --steps 1,2 --grid 'topk=5,10,20' --grid 'recent=1,3,5' --json runs/memory_tune.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

HARD = ("bmx-bumps", "drift-turn", "scooter-gray", "boat", "dance-jump", "breakdance-flare", "motocross-bumps",
        "paragliding", "kite-walk", "car-turn")  # fast motion, small objects, occlusion, deforming people


def parse_grid(specs: list[str], config_cls) -> list[dict]:
    """['topk=5,10', 'recent=1,3'] -> every combination as a dict of typed values."""
    types = {f.name: f.type for f in fields(config_cls)}
    axes = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in types:
            raise SystemExit(f"--grid {spec}: unknown setting {name} (one of {', '.join(types)})")
        cast = {"int": int, int: int, "str": str, str: str}.get(types[name], float)
        axes.append([(name, cast(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def cache_clip(tracker, seq, step: int, path: Path) -> dict:
    """Network outputs (`tracker.network`: two tensors) of every `step`-th frame after the first,
    cached at `path` (torch file)."""
    import torch

    if path.exists():
        return torch.load(path)
    finer = path.with_name(path.name.replace(f"-s{step}.pt", "-s1.pt"))
    if step > 1 and finer.exists():  # every step-th frame of the step-1 cache: the same outputs, no network run
        data = torch.load(finer)
        keep = [n for n, i in enumerate(data["index"]) if i % step == 0]
        return {"index": [data["index"][n] for n in keep], "proto": data["proto"][keep], "feats": data["feats"][keep]}
    image0, mask0 = seq.first()
    tracker.start(image0, mask0)
    index = list(range(0, len(seq), step))[1:]
    outputs = [tracker.network(seq.read_frame(i)) for i in index]
    data = {"index": index, "proto": torch.stack([p.half() for p, _ in outputs]),
            "feats": torch.stack([f.half() for _, f in outputs])}
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)
    return data


def replay(tracker, seq, data, frames: dict[int, np.ndarray], gts: dict[int, np.ndarray]) -> dict[str, float]:
    """One clip's J and F means over its predicted frames (the last one not scored, as DAVIS-2016),
    and the mean J of the first and of the last quarter of them."""
    from sgone.engine.video_metrics import f_measure, jaccard

    image0, mask0 = seq.first()
    tracker.start(image0, mask0)
    js, fs = [], []
    index = data["index"]
    cached = iter(zip(data["proto"], data["feats"]))
    if not hasattr(tracker, "step_from"):  # a mode without it reads its network outputs from the cache
        tracker.network = lambda image: tuple(t.float() for t in next(cached))
    for n, i in enumerate(index):
        if hasattr(tracker, "step_from"):
            p, f = next(cached)
            pred = tracker.step_from(frames[i], p.float(), f.float())
        else:
            pred = tracker.step(frames[i])
        if n == len(index) - 1:
            break  # the last frame is not scored
        js.append(jaccard(pred.mask, gts[i]))
        fs.append(f_measure(pred.mask, gts[i]))
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J": j, "F": f, "JF": (j + f) / 2, "J_frames": [round(float(x), 4) for x in js], "J_first": float(np.mean(js[: max(1, len(js) // 4)])),
            "J_last": float(np.mean(js[-max(1, len(js) // 4):]))}


def differs(a: dict, b: dict) -> bool:
    """Whether two base settings differ in a setting both name (a run made before a setting existed
    ran without it, i.e. with it off)."""
    return any(a[k] != b[k] for k in a.keys() & b.keys())


def merge(paths: list[str]) -> dict:
    """Results of several runs with the same base settings and steps, as one: runs that tried the same
    settings over different clips are joined clip-wise; runs that tried different settings over the
    same clips are joined setting-wise (a setting tried twice is kept once)."""
    groups: list[dict] = []
    for p in paths:
        run = json.loads(Path(p).read_text())
        if groups and (run["steps"] != groups[0]["steps"] or differs(run["base"], groups[0]["base"])):
            raise SystemExit(f"--merge: {p} has other base settings or steps than {paths[0]}")
        same = next((g for g in groups if g["grid"] == run["grid"]), None)
        if same is None:
            groups.append(run)
            continue
        for g, clips in run["per_clip"].items():
            same["per_clip"][g] = {**same["per_clip"][g], **clips}
    out = dict(groups[0], grid=[], per_clip={})
    clips = set(groups[0]["per_clip"]["0"])
    for run in groups:
        if set(run["per_clip"]["0"]) != clips:
            raise SystemExit("--merge: runs of different settings cover different clips")
        for g, setting in enumerate(run["grid"]):
            if setting not in out["grid"]:
                out["per_clip"][str(len(out["grid"]))] = run["per_clip"][str(g)]
                out["grid"].append(setting)
    return out


def decay_table(out: dict, worst: int) -> None:
    """Per-clip J over time (8 equal spans of the scored frames) of the `worst` clip/step pairs by J
    decay under the first setting, and each setting's decay on them (runs that kept per-frame J)."""
    grid, per_clip = out["grid"], out["per_clip"]
    rows = []
    for clip, per in per_clip["0"].items():
        for step, v in per.items():
            if "J_frames" in v:
                rows.append((v["J_first"] - v["J_last"], clip, step))
    rows.sort(reverse=True)
    print(f"\n| clip, step | J over time, {grid[0] or 'base'} (8 spans) | " +
          " | ".join(f"J decay, {g or 'base'}" for g in grid) + " |")
    print("|---|---|" + "---:|" * len(grid))
    for _, clip, step in rows[:worst]:
        spans = np.array_split(np.array(per_clip["0"][clip][step]["J_frames"]), 8)
        decays = [per_clip[str(g)][clip][step]["J_first"] - per_clip[str(g)][clip][step]["J_last"] for g in range(len(grid))]
        print(f"| {clip}, {step} | " + " ".join(f"{x.mean() * 100:.0f}" for x in spans if len(x)) + " | " +
              " | ".join(f"{d * 100:.1f}" for d in decays) + " |")


def report(out: dict, folds: int) -> list[float]:
    """Print the per-setting table and the cross-validation over folds of clips; the held-out scores."""
    grid, steps = out["grid"], out["steps"]
    scores = {int(g): {c: {int(s): v for s, v in per.items()} for c, per in clips.items()} for g, clips in out["per_clip"].items()}
    names = sorted(scores[0])

    def mean(g: int, clips: list[str], step: int | None = None, key: str = "JF") -> float:
        use = steps if step is None else [step]
        return float(np.mean([scores[g][c][s][key] for c in clips for s in use])) * 100

    fold_of = {c: i % folds for i, c in enumerate(sorted(names))}
    rows = []
    for g, setting in enumerate(grid):
        rows.append({"setting": setting, "all": mean(g, names), "hard": mean(g, [c for c in names if c in HARD] or names),
                     **{f"step{s}": mean(g, names, s) for s in steps},
                     **{f"J_step{s}": mean(g, names, s, "J") for s in steps},
                     **{f"F_step{s}": mean(g, names, s, "F") for s in steps},
                     **{f"decay_step{s}": mean(g, names, s, "J_first") - mean(g, names, s, "J_last") for s in steps}})
    rows.sort(key=lambda r: -r["all"])
    print("\n| setting | J&F all | " + " | ".join(f"J&F / J / F / J decay, step {s}" for s in steps) + " | J&F hard |")
    print("|---|---:|" + "---:|" * len(steps) + "---:|")
    for r in rows:
        per = " | ".join(f"{r[f'step{s}']:.1f} / {r[f'J_step{s}']:.1f} / {r[f'F_step{s}']:.1f} / {r[f'decay_step{s}']:.1f}" for s in steps)
        print(f"| {r['setting'] or 'base'} | {r['all']:.1f} | {per} | {r['hard']:.1f} |")
    held = []
    print("\n| held-out fold | clips | chosen on the other folds | J&F there | J&F of the overall best there |")
    print("|---|---:|---|---:|---:|")
    overall = max(range(len(grid)), key=lambda g: mean(g, names))
    for k in range(folds):
        test = [c for c in names if fold_of[c] == k]
        train = [c for c in names if fold_of[c] != k]
        g = max(range(len(grid)), key=lambda i: mean(i, train))
        held.append(mean(g, test))
        print(f"| {k} | {len(test)} | {grid[g] or 'base'} | {held[-1]:.1f} | {mean(overall, test):.1f} |")
    print(f"\ncross-validated J&F {np.mean(held):.1f} (folds {min(held):.1f}-{max(held):.1f}, spread {max(held) - min(held):.1f}); "
          f"base {out['base']}")
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="DAVIS folder (train clips)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--cache", default=None, help="folder for the cached network outputs (required unless --merge)")
    parser.add_argument("--steps", default="1", help="frame steps to score, comma list (1 = the clip as stored)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="settings to try (repeatable; all combinations)")
    parser.add_argument("--try", dest="tries", action="append", default=[], metavar="NAME=V[;NAME=V]",
                        help="one setting to try (repeatable; names joined by ';'); with --grid, both lists")
    parser.add_argument("--mode", default="memory", choices=("memory", "temporal"),
                        help="the mode whose settings are tried (temporal: its TemporalConfig)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=V", help="fixed settings")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sequences", default=None, help="only these clips (comma list), for a quick look")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worst-decay", type=int, default=0, metavar="N",
                        help="also list the N clip/step pairs with the largest J decay, J over time")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="report on these runs' results together (runs over different clips) and stop")
    args = parser.parse_args(argv)
    if args.merge:
        out = merge(args.merge)
        report(out, args.folds)
        if args.worst_decay:
            decay_table(out, args.worst_decay)
        return 0
    if not args.root or not args.cache:
        parser.error("--root and --cache are required (unless --merge)")

    import torch

    from sgone.data.davis import DavisSource
    from sgone.video.label_memory import LabelMemoryConfig, LabelMemoryTracker
    from sgone.video.model import DEFAULT_VIDEO_SIZE, video_predictor
    from sgone.video.temporal import TemporalConfig, TemporalTracker

    torch.set_num_threads(args.threads)
    predictor = video_predictor(args.model, device="cpu", size=args.size or DEFAULT_VIDEO_SIZE)
    Config, Tracker = (LabelMemoryConfig, LabelMemoryTracker) if args.mode == "memory" else (TemporalConfig, TemporalTracker)
    base = Config(**{k: v for d in parse_grid(args.set, Config) for k, v in d.items()})
    grid = (parse_grid(args.grid, Config) if args.grid else []) + \
        [{k: v for part in spec.split(";") for k, v in parse_grid([part], Config)[0].items()} for spec in args.tries]
    grid = grid or [{}]
    source = DavisSource(args.root)
    names = args.sequences.split(",") if args.sequences else source.sequences(args.split)
    steps = [int(s) for s in args.steps.split(",")]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model_tag = (args.model or "default").replace("/", "_")
    features = "" if getattr(base, "features", "finest") == "finest" else f"-{base.features}"  # changes the cache
    scores: dict[int, dict[str, dict[int, dict]]] = {g: {} for g in range(len(grid))}  # setting -> clip -> step -> J/F
    t0 = time.perf_counter()
    for name in names:
        seq = source.sequence(name)
        for step in steps:
            data = cache_clip(Tracker(predictor, base), seq, step,
                              cache / f"{args.mode}{features}-{model_tag}-{predictor.size}-{name}-s{step}.pt")
            frames = {i: seq.read_frame(i) for i in data["index"]}
            gts = {i: seq.read_mask(i) for i in data["index"]}
            for g, setting in enumerate(grid):
                tracker = Tracker(predictor, replace(base, **setting))
                scores[g].setdefault(name, {})[step] = replay(tracker, seq, data, frames, gts)
        best = max(range(len(grid)), key=lambda g: np.mean([scores[g][name][s]["JF"] for s in steps]))
        print(f"{name}: {len(grid)} settings x {len(steps)} steps, best here {grid[best]} "
              f"{np.mean([scores[best][name][s]['JF'] for s in steps]) * 100:.1f} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)

    out = {"mode": args.mode, "base": base.as_dict(), "grid": grid, "steps": steps, "folds": args.folds,
           "per_clip": {str(g): scores[g] for g in scores}}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    report(out, args.folds)
    if args.worst_decay:
        decay_table(out, args.worst_decay)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
