"""Train and cross-validate the `memory` mode's learnt read-out (issue 22, item 4) on DAVIS-2016 train.

1. **collect**: the training-free memory mode runs over every clip (cached network outputs, as
   `davis_memory_tune.py`) and records what the read-out reads (`sgone.video.readout.EVIDENCE`) per
   frame, with the truth pooled to the grid; its J/F are the baseline, scored in the same run;
2. **train**: for each fold of clips (clip i -> fold i mod --folds), a head on the other folds'
   frames (both frame steps, horizontal flips), seeded; and one head on every clip (`all.pt`, the
   one that would ship);
3. **score**: every clip is replayed with the head that never saw it (the learnt read-out in the
   loop: its predictions go into the memory) and scored with the DAVIS-2016 protocol.

The report is `davis_memory_tune.py`'s: setting "base" is the training-free read, the other the
cross-validated read-out; per-fold held-out J&F, J decay and the hard clips.

    python benchmarks/davis_readout.py --root ../shared/data/davis2016-train --cache /tmp/dcache \\
        --steps 1,2 --out runs/readout --json runs/readout.json --workers 2
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sgone.io import atomic_path, atomic_write

_TUNE = Path(__file__).with_name("davis_memory_tune.py")


def tune_module():
    spec = importlib.util.spec_from_file_location("davis_memory_tune", _TUNE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_STATE: dict = {}
TRUTH_SCALE = 4  # the truth is kept at 4x the grid's resolution; the loss is taken there


def _init(root: str, cache: str, size: int | None, model: str | None) -> None:
    """A worker's clips, cache and model (one thread each)."""
    from sgone.data.davis import DavisSource
    from sgone.video.model import DEFAULT_VIDEO_SIZE, video_predictor

    torch.set_num_threads(1)
    _STATE.update(source=DavisSource(root), cache=Path(cache), tune=tune_module(),
                  predictor=video_predictor(model, device="cpu", size=size or DEFAULT_VIDEO_SIZE),
                  model_tag=(model or "default").replace("/", "_"))


def _replay(name: str, step: int, tracker=None, **settings) -> tuple[dict, dict]:
    """One clip at one frame step replayed by a memory-mode tracker (LabelMemoryConfig(**settings)
    unless `tracker` is given) over its cached network outputs -> (scores, the frames' truth by index)."""
    from sgone.video.label_memory import LabelMemoryConfig, LabelMemoryTracker

    s = _STATE
    tracker = tracker or LabelMemoryTracker(s["predictor"], LabelMemoryConfig(**settings))
    seq = s["source"].sequence(name)
    data = s["tune"].cache_clip(tracker, seq, step,
                                s["cache"] / f"memory-{s['model_tag']}-{s['predictor'].size}-{name}-s{step}.pt")
    frames = {i: seq.read_frame(i) for i in data["index"]}
    gts = {i: seq.read_mask(i) for i in data["index"]}
    return s["tune"].replay(tracker, seq, data, frames, gts), gts


def collect(job: tuple[str, int]) -> tuple[str, int, dict, "np.ndarray", "np.ndarray"]:
    """One clip at one step: the training-free run's scores, its evidence (n,E,h,w) fp16 and the
    truth's object share per cell (n,h,w) fp16."""
    from sgone.video.label_memory import LabelMemoryConfig, LabelMemoryTracker

    name, step = job
    tracker = LabelMemoryTracker(_STATE["predictor"], LabelMemoryConfig())
    tracker.record = []
    scores, gts = _replay(name, step, tracker)
    evidence = torch.stack(tracker.record)  # one per replayed frame
    fine = tuple(TRUTH_SCALE * n for n in evidence.shape[-2:])  # the truth finer than the grid: boundaries count
    truth = torch.stack([F.adaptive_avg_pool2d(torch.from_numpy((gts[i] == 1).astype(np.float32))[None, None], fine)[0, 0]
                         for i in sorted(gts)[: len(evidence)]])
    return name, step, scores, evidence.numpy(), truth.half().numpy()


def score(job: tuple[str, int, dict]) -> tuple[str, int, dict]:
    """One clip at one step replayed with the memory mode's settings in `job[2]` (a learnt head or keys)."""
    name, step, settings = job
    return name, step, _replay(name, step, **settings)[0]


def fine_loss(prob: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of grid probabilities (B,h,w), upsampled bilinearly as the mode upsamples
    them, against the soft truth (B,sh,sw) at TRUTH_SCALE x the grid."""
    up = F.interpolate(prob[:, None], size=truth.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return F.binary_cross_entropy(up.clamp(1e-6, 1 - 1e-6), truth)


def fine_j(prob: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(B,) J of grid probabilities (B,h,w), upsampled and thresholded at 0.5, against the truth at
    TRUTH_SCALE x the grid (B,sh,sw) thresholded at 0.5 (1 where both are empty)."""
    up = F.interpolate(prob[:, None], size=truth.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0.5
    t = truth > 0.5
    inter, union = (up & t).sum((1, 2)).float(), (up | t).sum((1, 2)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def held_out_losses(head, samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float, float]:
    """(the blend's loss, the head's loss, the blend's J, the head's J) on frames the head never saw,
    the evidence as recorded (teacher-forced: no read-out in the loop); J per clip, then averaged."""
    from sgone.video.readout import EVIDENCE

    blend, learnt, j_blend, j_learnt = [], [], [], []
    with torch.no_grad():
        for ev, truth in samples:
            x, y = torch.from_numpy(ev).float(), torch.from_numpy(truth).float()
            b, p = x[:, EVIDENCE.index("blend")].clamp(1e-4, 1 - 1e-4), head(x)
            blend.append(float(fine_loss(b, y)) * len(x))
            learnt.append(float(fine_loss(p, y)) * len(x))
            j_blend.append(float(fine_j(b, y).mean()))
            j_learnt.append(float(fine_j(p, y).mean()))
    n = sum(len(ev) for ev, _ in samples)
    return sum(blend) / n, sum(learnt) / n, float(np.mean(j_blend)) * 100, float(np.mean(j_learnt)) * 100


def train_head(samples: list[tuple[np.ndarray, np.ndarray]], epochs: int, seed: int, lr: float, batch: int,
               width: int = 32, bound: float = 0.0, weight_decay: float = 1e-4):
    """A ReadoutHead fitted to (evidence (n,E,h,w), truth (n,4h,4w)) clips by `fine_loss`; frames of
    one grid shape per batch, random horizontal flips."""
    from sgone.video.readout import ReadoutHead

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    by_shape: dict[tuple, list] = {}
    for ev, truth in samples:
        by_shape.setdefault(ev.shape[-2:], []).append((torch.from_numpy(ev), torch.from_numpy(truth)))
    pools = {k: (torch.cat([e for e, _ in v]), torch.cat([t for _, t in v])) for k, v in by_shape.items()}
    total = sum(len(x) for x, _ in pools.values())
    head = ReadoutHead(width, bound)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, total // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    keys = sorted(pools)
    weights = np.array([len(pools[k][0]) for k in keys], dtype=float) / total
    losses = []
    for it in range(steps):
        x_all, y_all = pools[keys[rng.choice(len(keys), p=weights)]]
        at = torch.from_numpy(rng.choice(len(x_all), size=min(batch, len(x_all)), replace=False))
        x, y = x_all[at].float(), y_all[at].float()
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = fine_loss(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return head.eval(), float(np.mean(losses[: max(1, steps // 10)])), float(np.mean(losses[-max(1, steps // 10):]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="DAVIS folder (train clips)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--cache", required=True, help="folder of cached network outputs (shared with davis_memory_tune.py)")
    parser.add_argument("--steps", default="1,2")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--width", type=int, default=32, help="channels of the head's convolutions")
    parser.add_argument("--bound", type=float, default=0.0, help="largest logit correction (0 = unbounded)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sequences", default=None, help="only these clips (comma list), for a quick look")
    parser.add_argument("--out", required=True, help="folder for the heads (fold<k>.pt, all.pt) and the recorded evidence")
    parser.add_argument("--no-score", action="store_true",
                        help="train and report the held-out losses only (no replay with the heads in the loop)")
    parser.add_argument("--json", default=None, help="results in davis_memory_tune.py's format (--merge reads it)")
    args = parser.parse_args(argv)

    from sgone.data.davis import DavisSource
    from sgone.video.label_memory import LabelMemoryConfig
    from sgone.video.readout import save_readout

    torch.set_num_threads(max(1, args.workers))
    names = args.sequences.split(",") if args.sequences else DavisSource(args.root).sequences(args.split)
    names = sorted(names)
    steps = [int(s) for s in args.steps.split(",")]
    fold_of = {c: i % args.folds for i, c in enumerate(names)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(n, s) for n in names for s in steps]
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    base: dict[str, dict[int, dict]] = {}
    samples: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    recorded = out / "evidence.pt"  # the collect phase's output, reused by later runs over the same clips
    pool = ctx.Pool(args.workers, _init, (args.root, args.cache, args.size, args.model))
    try:
        if recorded.exists():
            saved = torch.load(recorded, weights_only=False)
            if saved["clips"] != names or saved["steps"] != steps or saved["truth_scale"] != TRUTH_SCALE:
                raise SystemExit(f"{recorded}: recorded for other clips, steps or truth scale; use another --out")
            base, samples = saved["base"], saved["samples"]
        else:
            for done, (name, step, scores, ev, truth) in enumerate(pool.imap_unordered(collect, jobs), 1):
                base.setdefault(name, {})[step] = scores
                samples[(name, step)] = (ev, truth)
                print(f"collect {done}/{len(jobs)} {name} s{step}: J&F {scores['JF'] * 100:.1f}, {len(ev)} frames "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            with atomic_path(recorded) as tmp:
                torch.save({"clips": names, "steps": steps, "truth_scale": TRUTH_SCALE, "base": base, "samples": samples}, tmp)
        heads, held = {}, {}
        for k in list(range(args.folds)) + ([] if args.no_score else ["all"]):
            train = [v for (n, _), v in samples.items() if k == "all" or fold_of[n] != k]
            head, first, last = train_head(train, args.epochs, args.seed, args.lr, args.batch, args.width,
                                           args.bound, args.weight_decay)
            path = out / (f"fold{k}.pt" if k != "all" else "all.pt")
            clips = sorted({n for n in names if k == "all" or fold_of[n] != k})
            save_readout(head, path, {"clips": clips, "steps": steps, "epochs": args.epochs, "seed": args.seed,
                                      "lr": args.lr, "width": args.width, "bound": args.bound, "weight_decay": args.weight_decay, "model": args.model or "default"})
            heads[k] = str(path)
            line = f"head {k}: {sum(len(e) for e, _ in train)} frames, training loss {first:.4f} -> {last:.4f}"
            if k != "all":
                held[k] = held_out_losses(head, [v for (n, _), v in samples.items() if fold_of[n] == k])
                line += (f"; held-out fold, teacher-forced: loss blend {held[k][0]:.4f}, head {held[k][1]:.4f}; "
                         f"J blend {held[k][2]:.1f}, head {held[k][3]:.1f}")
            print(line + f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        learnt: dict[str, dict[int, dict]] = {}
        if args.no_score:
            return 0
        jobs = [(n, s, {"readout": heads[fold_of[n]]}) for n in names for s in steps]
        for done, (name, step, scores) in enumerate(pool.imap_unordered(score, jobs), 1):
            learnt.setdefault(name, {})[step] = scores
            print(f"score {done}/{len(jobs)} {name} s{step}: J&F {scores['JF'] * 100:.1f} "
                  f"(base {base[name][step]['JF'] * 100:.1f}) ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    finally:
        pool.terminate()
    result = {"mode": "memory", "base": LabelMemoryConfig().as_dict(), "grid": [{}, {"readout": "cross-validated"}],
              "steps": steps, "folds": args.folds, "per_clip": {"0": base, "1": learnt},
              "readout": {"epochs": args.epochs, "lr": args.lr, "seed": args.seed, "width": args.width,
                          "bound": args.bound, "weight_decay": args.weight_decay, "heads": heads,
                          "held_out": {str(k): {"loss_blend": v[0], "loss_head": v[1], "J_blend": v[2], "J_head": v[3]}
                                       for k, v in held.items()}}}
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=1))
    tune = tune_module()
    tune.report(json.loads(json.dumps(result)), args.folds)
    tune.decay_table(json.loads(json.dumps(result)), 8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
