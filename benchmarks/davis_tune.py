"""Choose the temporal mode's settings on the DAVIS-2016 tuning clips (coordinate search).

The network part of every frame (the prototype probability and the matching features, which no
setting changes) is computed once per clip and cached in memory; each setting then replays the
tracker's temporal steps over the cached frames and is scored with the DAVIS-2016 protocol
(first and last frame not scored). Settings are changed one at a time from the current best,
in the order of `GRID`, keeping a change only when it raises the mean J&F over the tuning clips.
Only the tuning clips are read: the reported clips stay out of every choice. Each row is
labelled by the settings that differ from the start (`--set`, else TemporalConfig's defaults).

The search of docs/results.md section 6 (it started from the settings before tuning):

    python benchmarks/davis_tune.py --root ../shared/data/davis2016-train \\
        --sequences docs/splits/davis2016-tune.txt --json davis_tune.json \\
        --set colour_weight=0 --set temperature=10 --set window=0.15 --set capacity=2 \\
        --set guided_radius=0.01 --set guided_eps=0.001
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace

import numpy as np

GRID: list[tuple[str, list]] = [
    ("colour_weight", [0.0, 0.5, 1.0, 2.0]),
    ("colour_rate", [0.0, 0.1, 0.3]),
    ("match_weight", [0.0, 0.2, 0.3, 0.5]),
    ("prior_sigma", [0.0, 0.5, 1.0, 2.0]),
    ("guided_radius", [0.0, 0.005, 0.01, 0.02]),
    ("guided_eps", [1e-4, 1e-3, 1e-2]),
    ("temperature", [5.0, 10.0, 20.0]),
    ("window", [0.08, 0.15, 0.3]),
    ("capacity", [0, 2, 4]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="DAVIS folder")
    parser.add_argument("--sequences", required=True, help="tuning clips: a file (one name a line) or a comma list")
    parser.add_argument("--size", type=int, default=None, help="network input size (default: sgone video's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="start from these settings instead of TemporalConfig's defaults (repeatable)")
    parser.add_argument("--no-search", action="store_true", help="score the starting settings only")
    parser.add_argument("--json", default=None, help="also write every setting tried and its score here")
    args = parser.parse_args(argv)

    import torch

    from sgone.data.davis import DavisSource, read_sequence_list
    from sgone.engine.video_metrics import f_measure, jaccard
    from sgone.video.model import DEFAULT_VIDEO_SIZE, video_predictor
    from sgone.video.temporal import TemporalConfig, TemporalTracker

    torch.set_num_threads(args.threads)
    size = DEFAULT_VIDEO_SIZE if args.size is None else args.size
    predictor = video_predictor(device="cpu", size=size)
    source = DavisSource(args.root)
    clips = []
    t0 = time.perf_counter()
    for name in read_sequence_list(args.sequences):
        seq = source.sequence(name)
        image0, mask0 = seq.first()
        tracker = TemporalTracker(predictor)
        tracker.start(image0, mask0)
        frames = [img for _, img in seq.frames(start=1)]
        cache = [tracker.network(img) for img in frames]
        gts = [seq.read_mask(i) for i in range(1, len(seq) - 1)]
        clips.append((name, image0, mask0, frames, cache, gts))
        print(f"cached {name}: {len(frames)} frames ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    class Replay(TemporalTracker):
        def network(self, image):  # the cached network outputs, in frame order
            return self._cache[self.frame - 1]

    def score(config: TemporalConfig) -> tuple[float, float, float, dict[str, float]]:
        js, fs, per = [], [], {}
        for name, image0, mask0, frames, cache, gts in clips:
            tracker = Replay(predictor, config)
            tracker._cache = cache
            tracker.start(image0, mask0)
            j, f = [], []
            for i, img in enumerate(frames[:-1]):
                mask = tracker.step(img).mask
                j.append(jaccard(mask, gts[i]))
                f.append(float(f_measure(mask, gts[i])))
            tracker.step(frames[-1])
            js.append(np.mean(j))
            fs.append(np.mean(f))
            per[name] = (js[-1] + fs[-1]) / 2
        return float(np.mean(js)), float(np.mean(fs)), float((np.mean(js) + np.mean(fs)) / 2), per

    best = TemporalConfig()
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in asdict(best):
            parser.error(f"--set {item}: TemporalConfig has no field {key!r}")
        best = replace(best, **{key: type(getattr(best, key))(value)})
    start = asdict(best)
    tried: list[dict] = []
    cache_scores: dict[str, tuple] = {}

    def run(config: TemporalConfig) -> tuple:
        key = json.dumps(asdict(config), sort_keys=True)
        if key not in cache_scores:
            t = time.perf_counter()
            cache_scores[key] = score(config)
            j, f, jf, _ = cache_scores[key]
            tried.append({"config": asdict(config), "J": j, "F": f, "JF": jf})
            changed = {k: v for k, v in asdict(config).items() if start[k] != v}
            print(f"J {100 * j:.1f}  F {100 * f:.1f}  J&F {100 * jf:.1f}  ({time.perf_counter() - t:.0f} s)  {changed or 'start'}",
                  flush=True)
        return cache_scores[key]

    best_score = run(best)[2]
    for field, values in [] if args.no_search else GRID:
        for value in values:
            candidate = replace(best, **{field: value})
            jf = run(candidate)[2]
            if jf > best_score + 1e-9:
                best, best_score = candidate, jf
    print("\nbest on the tuning clips:", {k: v for k, v in asdict(best).items() if start[k] != v} or "the start")
    print(f"J&F {100 * best_score:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"best": asdict(best), "tried": tried}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
