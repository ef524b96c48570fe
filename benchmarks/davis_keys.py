"""Learn the `memory` mode's key projection (an STM-style learnt key for the memory read; issue 22,
item 4) on DAVIS-2016 train, and cross-validate it against the training-free one.

The memory mode compares cells after projecting their features on the first frame's 64 main
directions (PCA of that frame). Here the projection (C -> 64, one for every clip) and the read's
temperature are learnt instead: each training sample is a frame of a training clip read against
the first frame and the 3 previous frames (their true labels, pooled to the grid; the window as the
mode's), the loss is the binary cross-entropy of the top-k vote against the frame's true labels.
Per fold of clips (clip i -> fold i mod --folds), a projection is trained on the other folds and
scored on the fold's clips, first teacher-forced (the vote's grid J with true labels in memory,
PCA vs learnt), then with `--score`, in the loop (the memory mode replayed with
`LabelMemoryConfig(keys=<file>)`, J&F as `davis_memory_tune.py` reports it).

    python benchmarks/davis_keys.py --root ../shared/data/davis2016-train --cache /tmp/dcache \\
        --out runs/keys --json runs/keys.json --score
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import davis_readout  # this folder: its pool workers replay clips with given settings
from sgone.io import atomic_write

QUERY_CELLS = 512  # query cells per training step (a random subset of the frame's)


def load_clips(root: str, cache: Path, names: list[str], size: int | None) -> dict[str, dict]:
    """Per clip: unit features (T,C,h,w) fp16 of the first frame then every cached frame, and the
    true object share of each grid cell (T,h,w)."""
    from sgone.data.davis import DavisSource
    from sgone.video.label_memory import LabelMemoryConfig, LabelMemoryTracker
    from sgone.video.model import DEFAULT_VIDEO_SIZE, video_predictor

    predictor = video_predictor(None, device="cpu", size=size or DEFAULT_VIDEO_SIZE)
    tracker = LabelMemoryTracker(predictor, LabelMemoryConfig())
    tune = davis_readout.tune_module()
    source = DavisSource(root)
    clips = {}
    for name in names:
        seq = source.sequence(name)
        data = tune.cache_clip(tracker, seq, 1, cache / f"memory-default-{predictor.size}-{name}-s1.pt")
        image0, mask0 = seq.first()
        first = tracker.encode(image0)[1].half()
        feats = torch.cat([first[None], data["feats"]])
        grid = feats.shape[-2:]
        masks = [mask0] + [seq.read_mask(i) for i in data["index"]]
        truth = torch.stack([F.adaptive_avg_pool2d(torch.from_numpy((m == 1).astype(np.float32))[None, None], grid)[0, 0]
                             for m in masks])
        clips[name] = {"feats": feats, "truth": truth, "index": [0] + list(data["index"])}
    return clips


def read(query: torch.Tensor, memory: list[tuple[torch.Tensor, torch.Tensor]], window: torch.Tensor, topk: int,
         temperature: torch.Tensor, first_bias: float, cells: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k vote of (D,N) unit query cells over memory frames [(keys (D,N), labels (N,))], the first
    read anywhere (+ first_bias), the others within `window` (N,N) -> (n,) for the query `cells`
    (indices; None = all). The top-k cells are chosen without gradient; their scores are recomputed
    with it (the same values), so training costs little more than the read."""
    keys = torch.cat([k for k, _ in memory], dim=1)
    labels = torch.cat([lab for _, lab in memory])
    n = query.shape[1]
    if cells is not None:
        query, window = query[:, cells], window[cells]
    bias = torch.zeros(keys.shape[1])
    bias[:n] = first_bias
    allowed = torch.cat([torch.ones_like(window)] + [window] * (len(memory) - 1), dim=1)
    with torch.no_grad():
        s = (query.T @ keys + bias * temperature).masked_fill(~allowed, float("-inf"))
        at = s.topk(min(topk, s.shape[1]), dim=1).indices  # (n,k)
    top = (query.T[:, None, :] * keys.T[at]).sum(-1) / temperature + bias[at]  # (n,k), with gradient
    return (torch.softmax(top, dim=1) * labels[at]).sum(dim=1)


def samples(clip: dict, step: int, recent: int):
    """(query position, [memory positions]) of every frame after the first at frame step `step`:
    the first frame, then up to `recent` previous frames of the step's sequence."""
    positions = list(range(0, len(clip["index"]), step))
    for n in range(1, len(positions)):
        yield positions[n], [0] + positions[max(0, n - recent):n][::-1]


def project(feats: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(C,N) unit features, (C,D) basis -> (D,N) unit."""
    return F.normalize(basis.T @ feats, dim=0)


def train_keys(clips: list[dict], init: torch.Tensor, steps: int, lr: float, seed: int, config) -> tuple[torch.Tensor, float]:
    """A (C,D) projection and a temperature, trained from `init` by the vote's cross-entropy."""
    from sgone.video.memory import window_mask

    g = torch.Generator().manual_seed(seed)
    basis = init.clone().requires_grad_(True)
    log_t = torch.tensor(float(np.log(config.temperature)), requires_grad=True)
    opt = torch.optim.Adam([basis, log_t], lr=lr)
    pool = [(c, q, m) for c in clips for s in (1, 2) for q, m in samples(c, s, config.recent)]
    windows = {}
    for it in range(steps):
        clip, q, mem = pool[int(torch.randint(len(pool), (1,), generator=g))]
        h, w = clip["feats"].shape[-2:]
        if (h, w) not in windows:
            windows[(h, w)] = window_mask(h, w, config.window * max(h, w))
        flat = clip["feats"].flatten(2)  # fp16; only the frames read are converted
        cells = torch.randperm(h * w, generator=g)[:QUERY_CELLS]
        vote = read(project(flat[q].float(), basis), [(project(flat[m].float(), basis), clip["truth"][m].flatten()) for m in mem],
                    windows[(h, w)], config.topk, log_t.exp(), float(np.log(config.first_weight)), cells)
        loss = F.binary_cross_entropy(vote.clamp(1e-4, 1 - 1e-4), clip["truth"][q].flatten()[cells])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return basis.detach(), float(log_t.detach().exp())


@torch.no_grad()
def forced_j(clip: dict, basis: torch.Tensor | None, temperature: float, config) -> float:
    """Mean grid J of the vote (true labels in memory) over a clip's frames at steps 1 and 2; basis
    None = the mode's PCA of the first frame."""
    from sgone.video.memory import pca_basis, window_mask

    h, w = clip["feats"].shape[-2:]
    window = window_mask(h, w, config.window * max(h, w))
    flat = clip["feats"].flatten(2).float()
    b = pca_basis(flat[0], config.dims) if basis is None else basis
    js = []
    for step in (1, 2):
        for q, mem in samples(clip, step, config.recent):
            vote = read(project(flat[q], b), [(project(flat[m], b), clip["truth"][m].flatten()) for m in mem], window,
                        config.topk, torch.tensor(temperature), float(np.log(config.first_weight)))
            pred, truth = vote > 0.5, clip["truth"][q].flatten() > 0.5
            union = int((pred | truth).sum())
            js.append(1.0 if union == 0 else int((pred & truth).sum()) / union)
    return float(np.mean(js))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--cache", required=True, help="cached network outputs (davis_memory_tune.py's)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500, help="training steps (one frame each)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sequences", default=None)
    parser.add_argument("--score", action="store_true", help="also replay every clip with its fold's projection (J&F)")
    parser.add_argument("--base-json", default=None, help="davis_memory_tune.py's run of the default (the baseline rows)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from sgone.data.davis import DavisSource
    from sgone.video.label_memory import LabelMemoryConfig
    from sgone.video.memory import pca_basis
    from sgone.video.readout import save_keys

    torch.set_num_threads(max(1, args.workers))
    config = LabelMemoryConfig()
    names = sorted(args.sequences.split(",") if args.sequences else DavisSource(args.root).sequences(args.split))
    fold_of = {c: i % args.folds for i, c in enumerate(names)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clips = load_clips(args.root, Path(args.cache), names, args.size)
    print(f"loaded {len(clips)} clips ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    files, forced = {}, {}
    for k in list(range(args.folds)) + ["all"]:
        train = [clips[n] for n in names if k == "all" or fold_of[n] != k]
        # start from the PCA of the training clips' first frames together
        init = pca_basis(torch.cat([c["feats"][0].flatten(1).float() for c in train], dim=1), config.dims)
        basis, temperature = train_keys(train, init, args.steps, args.lr, args.seed, config)
        path = out / (f"fold{k}.pt" if k != "all" else "all.pt")
        save_keys(basis, temperature, path, {"clips": sorted(n for n in names if k == "all" or fold_of[n] != k),
                                             "steps": args.steps, "lr": args.lr, "seed": args.seed})
        files[k] = str(path)
        line = f"keys {k}: temperature {temperature:.4f}"
        if k != "all":
            test = [n for n in names if fold_of[n] == k]
            pca = np.mean([forced_j(clips[n], None, config.temperature, config) for n in test]) * 100
            learnt = np.mean([forced_j(clips[n], basis, temperature, config) for n in test]) * 100
            forced[k] = (pca, learnt)
            line += f"; held-out fold, teacher-forced grid J: PCA {pca:.1f}, learnt {learnt:.1f}"
        print(line + f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(f"teacher-forced grid J, mean of held-out folds: PCA {np.mean([a for a, _ in forced.values()]):.1f}, "
          f"learnt {np.mean([b for _, b in forced.values()]):.1f}", flush=True)
    if not args.score:
        return 0
    learnt: dict[str, dict[int, dict]] = {}
    jobs = [(n, s, {"keys": files[fold_of[n]]}) for n in names for s in (1, 2)]
    with mp.get_context("spawn").Pool(args.workers, davis_readout._init, (args.root, args.cache, args.size, None)) as pool:
        for done, (name, step, scores) in enumerate(pool.imap_unordered(davis_readout.score, jobs), 1):
            learnt.setdefault(name, {})[step] = scores
            print(f"score {done}/{len(jobs)} {name} s{step}: J&F {scores['JF'] * 100:.1f} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    base = json.loads(Path(args.base_json).read_text())["per_clip"]["0"] if args.base_json else None
    result = {"mode": "memory", "base": config.as_dict(), "steps": [1, 2], "folds": args.folds,
              "grid": ([{}] if base else []) + [{"keys": "cross-validated"}],
              "per_clip": {"0": base, "1": learnt} if base else {"0": learnt},
              "keys": {"files": files, "forced_j": {str(k): v for k, v in forced.items()}}}
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=1))
    tune = davis_readout.tune_module()
    tune.report(json.loads(json.dumps(result)), args.folds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
