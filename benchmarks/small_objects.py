"""Small objects and many instances: the self-support step and the zoom step, off and on.

On the held-out folds of the real corpora (the episodes of `real_folds.py`: HSNet-style, --seed,
the fold's test classes), per fold and shots: mIoU of the first pass ("off"), the self-support step
("self", `sgone.self_support.second_look`), the zoom step ("zoom", `sgone.ops.zoom_refine`), both
("both"), the boundary step ("guided", `Predictor(boundary="guided")`: the guided filter at the
model's `sgone.boundary.boundary_settings`), the flip step ("flip", `Predictor(flip=True)`: the
mirrored query's reading averaged in) and the last two together ("flip+guided"); the foreground IoU
by the object's share of the query (<2 %, 2-10 %, >=10 %, as real_folds.py), and the time each step
adds per episode. The first pass and the self-support step
read the same cached query encoding (`FeatureCache`, as real_folds.py; the second look re-encodes
nothing); the zoom step encodes its crops from the image files. `--time-episodes N` also runs the
first N episodes of each fold and shots through `Predictor` (encodes included) with each option, so
the cost is stated against the default's whole time per episode. `--photos` adds the photo checks
(`real_photo_check.py`'s voc-photo and arc2017-flip; labelme with --labelme-examples DIR) through
`Predictor(MODEL, self_support=..., zoom=..., boundary=..., flip=...)` (one Predictor, the steps set in
turn); `--time-photos R` times each step on those photo episodes (R rounds, the steps taking turns on
each episode): the rule's time, the shipped model's whole episode. The steps run are --steps' (the
cached-path ms of "flip" include its one encode, counted once per episode for flip and flip+guided).

Checkpoints: --runs DIR with DIR/fold<F>/last.pt (scripts/train_real.sh), run at --head-weight
(default 0.25, the shipped model's) with --backbone-options (e.g. '{"precision": "int8"}' for the
shipped model's DINOv2; the default keeps each checkpoint's own). --choose scores a grid of the
steps' settings (the self-support blend weight and thresholds, the zoom paste weight, the guided
filter's radius and eps) on the folds given: run it on fold 0 only, then fix the constants
(sgone/self_support.py, sgone/predictor.py, sgone/boundary.py).

    R="--root ../shared/data/ccp --root ../shared/data/coco128 --root ../shared/data/camvid"
    python benchmarks/small_objects.py $R --runs runs/davis-1200 --folds 0 --shots 1 --episodes 200 --steps off,guided --choose
    python benchmarks/small_objects.py $R --runs runs/davis-1200 --folds 0 --shots 1 --episodes 200 --steps off,flip --out f0.json
    python benchmarks/small_objects.py --photos --steps off,guided,flip,flip+guided --time-photos 3
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sgone import ops  # noqa: E402
from sgone.boundary import boundary_settings, refine_probability  # noqa: E402
from sgone.commands.train import json_object  # noqa: E402
from sgone.data.episode import binary_from_labels  # noqa: E402
from sgone.data.mix import MixSource  # noqa: E402
from sgone.data.sampler import TestEpisodes  # noqa: E402
from sgone.engine.cached_episodes import LabelMaps  # noqa: E402
from sgone.engine.feature_cache import FeatureCache  # noqa: E402
from sgone.engine.metrics import IoUAccumulator, by_object_size, object_share  # noqa: E402
from sgone.inputs import image_tensor, input_size  # noqa: E402
from sgone.io import atomic_write, read_image  # noqa: E402
from sgone.models.registry import load_model, read_checkpoint  # noqa: E402
from sgone import predictor as predictors  # noqa: E402
from sgone import self_support as ss  # noqa: E402

STEPS = ("off", "self", "zoom", "both", "guided", "flip", "flip+guided")
RADII, EPSILONS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0), (0.04, 0.01, 0.001, 0.0003)


def settings(choose: bool) -> dict[str, dict]:
    """Named settings of the steps: the module constants, or (--choose) a grid around them."""
    base = {"high": ss.HIGH, "low": ss.LOW, "weight": ss.WEIGHT, "parts": ss.PARTS, "keep": ss.KEEP,
            "zoom_weight": predictors.ZOOM_WEIGHT, "boundary": None, "steps": STEPS}  # boundary None: the model's
    rows = {"constants": base}
    if choose:
        for w in (0.3, 0.5, 0.7):
            for high, low in ((0.7, 0.3), (0.6, 0.4)):
                for parts in (True, False):
                    for keep in (0.0, 0.5):
                        rows[f"self w{w} hi{high} lo{low} parts {parts} keep {keep}"] = dict(
                            base, weight=w, high=high, low=low, parts=parts, keep=keep, steps=("self",))
        for zw in (0.25, 0.5, 0.75, 1.0):
            rows[f"zoom paste {zw}"] = dict(base, zoom_weight=zw, steps=("zoom",))
        for radius in RADII:
            for eps in EPSILONS:
                rows[f"guided radius {radius} eps {eps}"] = dict(base, boundary=(radius, eps), steps=("guided",))
    return rows


class Episode:
    """One cached episode: the query's encoding, the shots' prototypes, the first pass's scores."""

    def __init__(self, model, source, spec, cache, labels, size):
        name, own = source.own_id(spec["class_ids"][0])
        self.model, self.source, self.spec, self.size = model, source, spec, size
        self.label = torch.from_numpy(binary_from_labels(labels.original(spec["query"]), own).astype(np.int64))
        self.hw = tuple(self.label.shape)
        self.grid = input_size(*self.hw, size)
        self.encoded = model.encode_levels(cache.tensors(source.image_path(spec["query"])))
        self.shots = [[]]
        self._prototypes: dict[int, dict] = {}
        for key in spec["supports"][0]:
            mask = torch.from_numpy(binary_from_labels(labels.resized(key), own).astype(np.int64))[None]
            encoded = model.encode_levels(cache.tensors(source.image_path(key)), need_side=False)
            self.shots[0].append(model.support_prototype(encoded, mask))

    def score(self, encoded, out_hw, shots=None) -> torch.Tensor:
        """(1,H,W) foreground probability of `encoded` against the shots (k-shot "avg", as the Predictor)."""
        prob, _ = ops.fuse_shots((shots or self.shots)[0], lambda p: self.model.segment(encoded, p),
                                 lambda lg: ops.upsample_logits(lg, out_hw).softmax(dim=1)[:, 1],
                                 self.model.fuse_prototypes, "avg")
        return prob

    def second(self, encoded, prob, grid, s) -> torch.Tensor:
        memo = self._prototypes.setdefault(id(encoded), {})  # one query's prototypes per mask, across settings

        def support_prototype(enc, mask):
            key = mask.numpy().tobytes()
            if key not in memo:
                memo[key] = self.model.support_prototype(enc, mask)
            return memo[key]

        return ss.second_look(lambda shots: self.score(encoded, prob.shape[-2:], shots), support_prototype,
                              encoded, self.shots, prob, grid, s["high"], s["low"], s["weight"], s["parts"], s["keep"])

    def image(self, memo: dict) -> np.ndarray:
        """The query's pixels, read once per episode (memo)."""
        if "image" not in memo:
            memo["image"] = read_image(self.source.image_path(self.spec["query"]))
            if memo["image"].shape[:2] != self.hw:
                raise SystemExit(f"{self.spec['query']}: image and label sizes differ")
        return memo["image"]

    def guided(self, prob, s, memo: dict) -> torch.Tensor:
        """The boundary step as `Predictor(boundary="guided")`, at the setting's (radius, eps) or the model's."""
        return refine_probability(prob, self.image(memo), self.size, *(s["boundary"] or boundary_settings(self.model)))

    def flipped(self, first, memo: dict) -> torch.Tensor:
        """The flip step as `Predictor(flip=True)`: the first pass averaged with the mirrored query's
        reading (encoded from the image file once per episode, memo)."""
        if "mirrored" not in memo:
            mirrored = self.model.encode(image_tensor(self.image(memo), self.grid).flip(-1))
            memo["mirrored"] = predictors.mirror_average((first,), (self.score(mirrored, self.hw),))[0]
        return memo["mirrored"]

    def zoomed(self, prob, s, with_self: bool, memo: dict) -> torch.Tensor:
        """The zoom step as `Predictor._zoom`, crops encoded from the image file (memo: crop -> scores)."""
        self.image(memo)

        def score_crop(crop: np.ndarray) -> torch.Tensor:
            key = (crop.__array_interface__["data"][0], crop.shape)  # the crop's place in the image
            if key not in memo:  # each crop is encoded once for every setting
                grid = input_size(*crop.shape[:2], self.size)
                encoded = self.model.encode(image_tensor(np.ascontiguousarray(crop), grid))
                memo[key] = (encoded, grid, self.score(encoded, crop.shape[:2]))
            encoded, grid, part = memo[key]
            return self.second(encoded, part, grid, s) if with_self else part

        return ops.zoom_refine(prob, memo["image"], score_crop, predictors.ZOOM_LOW, predictors.ZOOM_MARGIN,
                               predictors.ZOOM_CROPS, s["zoom_weight"], min_side=max(self.hw) // 4)


def fold_model(path, fold: int | None, head_weight: float | None, feature_cache: str, size: int,
               backbone_options: dict | None = None):
    """A fold's checkpoint (refused unless trained with `fold` held out; fold None: any model) ->
    (model in eval mode at `head_weight`, its feature cache at `size`)."""
    from sgone.engine.training_data import feature_cache_folder

    if fold is not None and read_checkpoint(path).get("config", {}).get("fold") != fold:
        sys.exit(f"{path}: not trained with fold {fold} held out")
    model = load_model(path, backbone_options=backbone_options).eval()
    if head_weight is not None and hasattr(model, "head_weight"):
        model.head_weight = head_weight
    return model, FeatureCache(feature_cache_folder(feature_cache), model.backbone, size)


def run_fold(model, source, specs, cache, labels, size, rows, steps, progress):
    """-> {(setting, step): (IoUAccumulator, [(share, fg IoU)], seconds)}."""
    from tqdm import tqdm

    out = {(r, st): (IoUAccumulator(), [], 0.0) for r, s in rows.items() for st in steps if st in s["steps"]}
    for spec in tqdm(specs, desc=progress, leave=False, dynamic_ncols=True):
        ep = Episode(model, source, spec, cache, labels, size)
        tick = time.perf_counter()
        first = ep.score(ep.encoded, ep.hw)
        first_s = time.perf_counter() - tick
        share = object_share(ep.label)
        memo: dict = {}
        for r, s in rows.items():
            done: dict[str, torch.Tensor] = {}
            for st in [st for st in steps if st in s["steps"]]:
                tick = time.perf_counter()
                if st == "off":
                    prob = first
                elif st == "self":
                    prob = ep.second(ep.encoded, first, ep.grid, s)
                elif st == "zoom":
                    prob = ep.zoomed(first, s, False, memo)
                elif st == "guided":
                    prob = ep.guided(first, s, memo)
                elif st == "flip":
                    prob = ep.flipped(first, memo)
                elif st == "flip+guided":
                    prob = ep.guided(ep.flipped(first, memo), s, memo)
                else:
                    prob = ep.zoomed(done.get("self", ep.second(ep.encoded, first, ep.grid, s)), s, True, memo)
                spent = time.perf_counter() - tick + (first_s if st == "off" else 0.0)
                done[st] = prob
                acc, sizes, seconds = out[(r, st)]
                iou = acc.add((prob[0] > 0.5).long(), ep.label, spec["class_ids"])
                sizes.append((share, iou))
                out[(r, st)] = (acc, sizes, seconds + spent)
    return out


def predictor_options(step: str) -> dict:
    """`Predictor` options of one step."""
    return {"self_support": step in ("self", "both"), "zoom": step in ("zoom", "both"),
            "boundary": "guided" if step in ("guided", "flip+guided") else "none", "flip": step.startswith("flip")}


def use_step(predictor, step: str) -> None:
    """Set one Predictor's step options in place (the app's way: one loaded model for every step)."""
    for key, value in predictor_options(step).items():
        setattr(predictor, key, value)


def time_steps(predictor, episodes: list[tuple[list, list, np.ndarray]], steps: list[str],
               rounds: int = 1) -> dict[str, float]:
    """Seconds per episode (set_support + predict, encodes included) of each step on (support images,
    support masks, query) episodes; the steps take turns on each episode so a busy machine weighs on
    all alike."""
    totals = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for supports, masks, query in episodes:
            for st in steps:
                use_step(predictor, st)
                tick = time.perf_counter()
                predictor.set_support(supports, masks)
                predictor.predict(query)
                totals[st] += time.perf_counter() - tick
    return {st: v / max(rounds * len(episodes), 1) for st, v in totals.items()}


def time_predictor(model, source, specs, labels, size, steps) -> dict[str, float]:
    """`time_steps` of a fold model on fold episodes (support and query read from the files)."""
    episodes = []
    for spec in specs:
        _, own = source.own_id(spec["class_ids"][0])
        episodes.append(([read_image(source.image_path(k)) for k in spec["supports"][0]],
                         [binary_from_labels(labels.original(k), own) for k in spec["supports"][0]],
                         read_image(source.image_path(spec["query"]))))
    return time_steps(predictors.Predictor(model, size=size, fuse=False), episodes, steps)


def photo_checks(model: str, size: int, labelme: Path | None, steps: list[str], time_rounds: int) -> dict:
    """mIoU of each step on the photo checks through one `Predictor(model)` (as shipped); with
    time_rounds, also its seconds per photo episode (after one warm-up episode)."""
    from training_free_ablation import arc2017_flip_episodes, labelme_episodes, miou, voc_photo_episodes

    sources = {"voc-photo": voc_photo_episodes(), "arc2017-flip": arc2017_flip_episodes()}
    if labelme:
        sources["labelme"] = labelme_episodes(labelme)
    p = predictors.Predictor(model, size=size)
    out: dict = {}
    for st in steps:
        use_step(p, st)
        out[st] = {name: 100 * miou(p, eps) for name, eps in sources.items()}
        print(f"photo checks, {st}: " + ", ".join(f"{k} {v:.1f}" for k, v in out[st].items())
              + f", mean {np.mean(list(out[st].values())):.1f}", flush=True)
    if time_rounds:
        episodes = [([s_img], [s_mask], q_img) for eps in sources.values() for _, s_img, s_mask, q_img, _ in eps]
        time_steps(p, episodes[:1], steps)  # warm-up: the runtime's first call compiles
        seconds = time_steps(p, episodes, steps, time_rounds)
        base = seconds.get("off")
        out["seconds per episode"] = seconds
        print(f"photo episodes, s per episode ({time_rounds} rounds of {len(episodes)}, steps in turn): "
              + ", ".join(f"{k} {v:.3f}" + (f" ({v / base:.2f}x)" if base else "") for k, v in seconds.items()),
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", default=[])
    parser.add_argument("--runs", help="folder with fold<F>/last.pt")
    parser.add_argument("--model", help="one model for every fold instead of --runs (development only: "
                                        "a registered name or checkpoint; not held out)")
    parser.add_argument("--folds", default="0,1,2,3")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=353)
    parser.add_argument("--head-weight", type=float, default=0.25)
    parser.add_argument("--backbone-options", type=json_object, default=None)
    parser.add_argument("--feature-cache", default="auto")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--choose", action="store_true", help="score a grid of the steps' settings (fold 0 only)")
    parser.add_argument("--time-episodes", type=int, default=0)
    parser.add_argument("--photos", action="store_true")
    parser.add_argument("--time-photos", type=int, default=0, metavar="ROUNDS",
                        help="with --photos: also time each step on the photo episodes, ROUNDS rounds")
    parser.add_argument("--photo-model", default="sgone-dinov2_s14-mobilenet_v2-real")
    parser.add_argument("--photo-size", type=int, default=473)
    parser.add_argument("--labelme-examples", type=Path)
    parser.add_argument("--out", default=None, help="results.json (default: none)")
    parser.add_argument("--tables", nargs="+", type=Path, metavar="JSON",
                        help="print the tables of earlier runs' --out files (their folds merged) and stop")
    args = parser.parse_args()
    if args.tables:
        merged: dict = {"folds": {}}
        for path in args.tables:
            for fold, row in json.loads(path.read_text())["folds"].items():
                merged["folds"].setdefault(fold, {}).update(row)
        print_tables(merged)
        return
    torch.set_grad_enabled(False)
    steps = args.steps.split(",")
    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "folds": {}}
    if args.runs or args.model:
        if not args.root:
            parser.error("--root is needed with --runs/--model")
        source = MixSource(args.root)
        labels = LabelMaps(source, args.size)
        rows = settings(args.choose)
        for fold in [int(f) for f in args.folds.split(",")]:
            path = Path(args.runs) / f"fold{fold}" / "last.pt" if args.runs else args.model
            model, cache = fold_model(path, fold if args.runs else None, args.head_weight, args.feature_cache,
                                      args.size, args.backbone_options)
            test = source.classes(fold, "test")
            results["folds"].setdefault(str(fold), {})["checkpoint step"] = read_checkpoint(path).get("step") \
                if args.runs else None
            for shots in [int(k) for k in args.shots.split(",")]:
                specs = TestEpisodes(source, fold, shots=shots, episodes=args.episodes, seed=args.seed).specs
                scored = run_fold(model, source, specs, cache, labels, args.size, rows, steps, f"fold {fold} {shots}-shot")
                row = results["folds"].setdefault(str(fold), {})
                for (r, st), (acc, sizes, seconds) in scored.items():
                    row[f"{r} | {st} | {shots}-shot"] = {"miou": 100 * acc.miou(test), "fb_iou": 100 * acc.fb_iou(),
                                                        "object_sizes": sizes, "seconds": seconds / len(specs)}
                    print(f"fold {fold} {shots}-shot {r} {st:>4}: mIoU {100 * acc.miou(test):.1f}  "
                          f"{1000 * seconds / len(specs):.0f} ms per episode (after the cached encodes)", flush=True)
                if args.time_episodes and shots == 1:
                    timing = time_predictor(model, source, specs[:args.time_episodes], labels, args.size, steps)
                    row["predictor seconds per episode"] = timing
                    print("  Predictor, s per episode (encodes included): "
                          + ", ".join(f"{k} {v:.2f}" for k, v in timing.items()), flush=True)
            if args.out:
                atomic_write(Path(args.out), json.dumps(results, indent=1) + "\n")
        print_tables(results)
    if args.photos:
        results["photos"] = photo_checks(args.photo_model, args.photo_size, args.labelme_examples, args.steps.split(","),
                                           args.time_photos)
    if args.out:
        atomic_write(Path(args.out), json.dumps(results, indent=1) + "\n")


def print_tables(results: dict) -> None:
    folds = sorted(results["folds"])
    keys = [k for k in results["folds"][folds[0]] if "|" in k and all(k in results["folds"][f] for f in folds)]
    print("checkpoint steps: " + ", ".join(f"fold {f} {results['folds'][f].get('checkpoint step')}" for f in folds))
    print("\n| setting | step | shots | " + " | ".join(f"fold {f}" for f in folds) + " | mean |"
          + (" mean folds 1-3 |" if len(folds) == 4 else "") + " <2 % | 2-10 % | >=10 % | ms/episode |")
    print("|---" * (len(folds) + 9 - (len(folds) != 4)) + "|")
    for key in keys:
        r, st, shots = [x.strip() for x in key.split("|")]
        vals = [results["folds"][f][key]["miou"] for f in folds]
        pooled = by_object_size([tuple(p) for f in folds for p in results["folds"][f][key]["object_sizes"]])
        ms = 1000 * np.mean([results["folds"][f][key]["seconds"] for f in folds])
        print(f"| {r} | {st} | {shots} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {np.mean(vals):.1f} |"
              + (f" {np.mean(vals[1:]):.1f} |" if len(folds) == 4 else "")
              + " | ".join(f" {v['fg_iou']:.1f} ({v['episodes']})" for v in pooled.values()) + f" | {ms:.0f} |")


if __name__ == "__main__":
    main()
