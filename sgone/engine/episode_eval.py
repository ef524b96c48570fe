"""Few-shot evaluation: a fixed episode list, scores at the original label size, reports.

Protocol (REFERENCE.md section 2): HSNet-style episodes (`TestEpisodes`, 1000 per fold,
seed 0, the fold's classes taking turns); images are fed with their longer side at `size`
(default 473, aspect kept, as `sgone segment` does); logits are upsampled bilinearly to the
query label's ORIGINAL size and scored there; 255 pixels are excluded; per-class mIoU and
FB-IoU as defined in `sgone.engine.metrics` (a class with zero union counts 0). A fold class
that got no episode is listed in `uncovered_classes` and left out of the mean.

k-shot fusion:
- "avg":  one prototype, the average of the k support prototypes (`model.fuse_prototypes`);
- "max":  k one-shot predictions against ONE query encoding, pixel-wise max of the
          foreground probabilities (the union of the k masks), as SG-One;
- "vote": the same k predictions, HSNet's vote normalised by the top vote, kept at >= 0.5.
Under `torchrun` the episode list is sharded across ranks and the integer counts are summed,
so the scores equal a one-process run exactly.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgone.data.transforms import DEFAULT_EVAL_SIZE, EvalTransform
from sgone.engine import distributed
from sgone.engine.metrics import IoUAccumulator
from sgone.errors import SgoneError
from sgone.options import FUSIONS


# ---------------------------------------------------------------------------------------------
# One episode


@torch.no_grad()
def predict_batch(model: nn.Module, batch: dict[str, Any], fusion: str = "avg",
                  device: str | torch.device = "cpu", label_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Predict the query mask of one collated episode (B = 1).

    batch: support_images (1,N,K,3,S,S), support_masks (1,N,K,S,S), query_image (1,3,S',S').
    label_size: (H,W) to upsample to; default the original query label's size when the batch
    carries `query_mask_original`, else the query mask's.
    Returns {"pred": (H,W) long 0..N, "prob": (N,H,W) foreground probability (or vote share)
    per way, "similarity": (N,h,w) guidance map at stride 8 (mean over shots for max/vote)}.
    """
    if fusion not in FUSIONS:
        raise SgoneError(f"unknown fusion '{fusion}': use one of {', '.join(FUSIONS)}")
    from sgone.ops import fuse_shots, label_map

    if label_size is None:
        label = batch.get("query_mask_original", batch["query_mask"])
        label_size = tuple((label[0] if isinstance(label, list) else label).shape[-2:])
    supports = batch["support_images"].to(device)
    masks = batch["support_masks"].to(device)
    query = model.encode(batch["query_image"].to(device))  # encoded once, shared by every shot
    _, ways, shots = supports.shape[:3]
    probs, sims = [], []
    for way in range(ways):
        prototypes = [model.support_prototype(model.encode(supports[:, way, k], need_side=False), masks[:, way, k])
                      for k in range(shots)]
        prob, sim = fuse_shots(prototypes, lambda p: model.segment(query, p),
                               lambda logits: _foreground(logits, label_size), model.fuse_prototypes, fusion)
        probs.append(prob)
        sims.append(sim)
    prob = torch.cat(probs).float()  # (N,H,W)
    pred = label_map(prob, fusion, shots)  # the keep rule shared with the Predictor (sgone.ops)
    return {"pred": pred.cpu(), "prob": prob.cpu(), "similarity": torch.cat(sims).float().cpu()}


def _foreground(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,2,h,w) logits -> (B,H,W) foreground probability, upsampled before the softmax."""
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)[:, 1]


# ---------------------------------------------------------------------------------------------
# An episode list


def score_episodes(model: nn.Module, episodes, fusion: str = "avg", device: str | torch.device = "cpu",
                   progress: bool = True, desc: str = "evaluate") -> tuple[IoUAccumulator, list[float]]:
    """Score every episode of `episodes` (a TestEpisodes); shards across ranks when distributed.

    Returns (accumulator summed over all ranks, foreground IoU of each episode in list order).
    """
    from tqdm import tqdm

    from sgone.data.episode import collate

    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
        if distributed.is_enabled() else (0, 1)
    n = len(episodes)
    acc = IoUAccumulator()
    episode_iou = torch.zeros(n, dtype=torch.float64)
    indices = distributed.shard(n, rank, world)
    bar = tqdm(indices, desc=desc, disable=not progress or rank != 0, dynamic_ncols=True, leave=False)
    for i in bar:
        batch = collate([episodes[i]])
        out = predict_batch(model, batch, fusion, device)
        label = batch.get("query_mask_original", batch["query_mask"])
        label = label[0] if isinstance(label, list) else label[0]
        episode_iou[i] = acc.add(out["pred"], label, batch["class_ids"][0].tolist())
        if rank == 0 and progress:
            bar.set_postfix(mIoU=f"{100 * acc.miou():.1f}", refresh=False)
    classes = sorted({int(c) for spec in episodes.specs for c in spec["class_ids"]})
    if world > 1:
        comm_device = _comm_device(device)
        acc = IoUAccumulator.from_tensor(distributed.all_reduce_sum(acc.to_tensor(classes), comm_device), classes)
        # every entry was written by exactly one rank, the others hold 0: the sum is exact
        episode_iou = distributed.all_reduce_sum(episode_iou, comm_device)
    return acc, episode_iou.tolist()


def _comm_device(device: str | torch.device) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU tensors."""
    device = torch.device(device)
    return device if device.type == "cuda" else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# The public entry points


def evaluate(model: nn.Module, source, fold: int, shots: int = 1, episodes: int = 1000, seed: int = 0,
             fusion: str = "avg", size: int | None = DEFAULT_EVAL_SIZE, device: str | torch.device = "cpu",
             out: str | Path | None = None, ways: int = 1, style: str = "hsnet", progress: bool = True,
             grid: int = 4, extra: dict | None = None) -> dict[str, Any]:
    """Evaluate `model` on `fold` of `source`; returns the results dict (scores in percent).

    size: the longer image side fed to the network, aspect kept (as `sgone segment`); None or 0
    feeds every image at its own size. Scoring is always at the original query label size.
    `uncovered_classes`: the fold's test classes that got no episode (too few episodes); they
    show IoU None and the mean is over the others. With `out`, rank 0 writes
    results.json / results.md / results.csv and episodes.png (the `grid` best and worst
    episodes: support with its mask, query with ground truth, prediction, similarity map).
    """
    from sgone.data.sampler import TestEpisodes

    if fusion not in FUSIONS:
        raise SgoneError(f"unknown fusion '{fusion}': use one of {', '.join(FUSIONS)}")
    device = torch.device(device)
    model = model.to(device).eval()
    started = time.perf_counter()
    test = TestEpisodes(source, fold, shots=shots, ways=ways, episodes=episodes, seed=seed, style=style,
                        transform=EvalTransform(size))
    acc, episode_iou = score_episodes(model, test, fusion, device, progress, desc=f"fold {fold}")
    class_names = getattr(source, "class_names", {}) or {}
    # every class of the fold is listed; one that got no episode shows IoU None and is left out of the mean
    fold_classes = sorted({int(c) for c in source.classes(fold, "test")}
                          | {int(c) for spec in test.specs for c in spec["class_ids"]})
    uncovered = [c for c in fold_classes if not acc.episodes.get(c)]
    per_class = acc.class_iou()
    results: dict[str, Any] = {
        "dataset": getattr(source, "name", type(source).__name__),
        "fold": fold, "shots": shots, "ways": ways, "episodes": len(test), "seed": test.seed,
        "style": style, "fusion": fusion, "input_size": size or "original",
        "input_size_rule": "longer side, aspect kept", "scored_at": "original label size", "units": "percent",
        "model": dict(getattr(model, "config", {}) or {}),
        "miou": 100 * acc.miou(fold_classes), "fb_iou": 100 * acc.fb_iou(),
        "classes": [{"id": c, "name": class_names.get(c, str(c)),
                     "iou": None if per_class.get(c) is None else 100 * per_class[c],
                     "episodes": acc.episodes.get(c, 0), "intersection": acc.intersection.get(c, 0),
                     "union": acc.union.get(c, 0)} for c in fold_classes],
        "uncovered_classes": uncovered,
        "counts": acc.to_dict(),
        "episode_iou": episode_iou,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if extra:
        results.update(extra)
    if out is not None and (not distributed.is_enabled() or torch.distributed.get_rank() == 0):
        out = Path(out)
        write_reports(results, out)
        if grid > 0:
            save_episode_grid(model, test, episode_iou, fusion, device, out / "episodes.png", count=grid)
    return results


def evaluate_folds(model_for_fold: Callable[[int], nn.Module], source, folds: list[int],
                   out: str | Path | None = None, **options) -> dict[str, Any]:
    """Evaluate several folds (each with its own model) and report the mean over folds.

    Per-fold reports go to out/fold{f}/; the summary (results.json/md/csv) to out/.
    """
    runs = []
    for fold in folds:
        model = model_for_fold(fold)
        runs.append(evaluate(model, source, fold, out=None if out is None else Path(out) / f"fold{fold}", **options))
    summary = {
        "dataset": runs[0]["dataset"], "folds": folds, "shots": runs[0]["shots"], "ways": runs[0]["ways"],
        "episodes": runs[0]["episodes"], "seed": runs[0]["seed"], "fusion": runs[0]["fusion"],
        "input_size": runs[0]["input_size"], "input_size_rule": runs[0]["input_size_rule"],
        "scored_at": "original label size", "units": "percent",
        "miou": float(np.mean([r["miou"] for r in runs])), "fb_iou": float(np.mean([r["fb_iou"] for r in runs])),
        "uncovered_classes": {str(r["fold"]): r["uncovered_classes"] for r in runs if r["uncovered_classes"]},
        "per_fold": [{k: v for k, v in r.items() if k not in ("episode_iou", "counts")} for r in runs],
    }
    if out is not None and (not distributed.is_enabled() or torch.distributed.get_rank() == 0):
        write_summary(summary, Path(out))
    return summary


# ---------------------------------------------------------------------------------------------
# Reports


def _size_text(size: int | str) -> str:
    return "inputs at their own size" if size == "original" else f"inputs with the longer side at {size}"


def coverage_warning(results: dict[str, Any]) -> str:
    """One line saying which of a fold's test classes got no episode ('' when all did)."""
    missing = results["uncovered_classes"]
    if not missing:
        return ""
    total = len(results["classes"])
    hint = f"--episodes {total} or more" if results["style"] == "hsnet" else "more --episodes"
    return (f"fold {results['fold']}: {len(missing)} of {total} test classes got no episode "
            f"(ids {', '.join(map(str, missing))}); the mIoU is over the other {total - len(missing)} only "
            f"(use {hint})")


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def write_reports(results: dict[str, Any], out: Path) -> None:
    """results.json (everything), results.md (per-class table + mean), results.csv (one row per class)."""
    from sgone.io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", json.dumps(results, indent=2, default=_json_default) + "\n")
    ways = "" if results["ways"] == 1 else f", {results['ways']}-way"
    lines = [f"# {results['dataset']} fold {results['fold']}, {results['shots']}-shot{ways}", "",
             f"{results['episodes']} episodes (seed {results['seed']}, {results['style']} style), "
             f"fusion {results['fusion']}, {_size_text(results['input_size'])}, scored at the original label size, "
             "255 pixels excluded.", ""]
    if results["uncovered_classes"]:
        lines += [f"**Warning:** {coverage_warning(results)}", ""]
    lines += ["| class | name | episodes | IoU |", "|---|---|---|---|"]
    lines += [f"| {c['id']} | {c['name']} | {c['episodes']} | {_fmt(c['iou'])} |" for c in results["classes"]]
    lines += ["", f"**mIoU {_fmt(results['miou'])}**, FB-IoU {_fmt(results['fb_iou'])}", ""]
    atomic_write(out / "results.md", "\n".join(lines))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "fold", "shots", "class_id", "class_name", "episodes", "intersection", "union", "iou"])
    for c in results["classes"]:
        writer.writerow([results["dataset"], results["fold"], results["shots"], c["id"], c["name"], c["episodes"],
                         c["intersection"], c["union"], "" if c["iou"] is None else f"{c['iou']:.4f}"])
    writer.writerow([results["dataset"], results["fold"], results["shots"], "mean", "mIoU", results["episodes"],
                     "", "", f"{results['miou']:.4f}"])
    writer.writerow([results["dataset"], results["fold"], results["shots"], "fb", "FB-IoU", results["episodes"],
                     "", "", f"{results['fb_iou']:.4f}"])
    atomic_write(out / "results.csv", buffer.getvalue())


def write_summary(summary: dict[str, Any], out: Path) -> None:
    """The folds side by side: results.json, results.md (per-fold table + mean), results.csv."""
    from sgone.io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    folds = summary["per_fold"]
    lines = [f"# {summary['dataset']}, {summary['shots']}-shot, folds {', '.join(map(str, summary['folds']))}", "",
             f"{summary['episodes']} episodes per fold (seed {summary['seed']}), fusion {summary['fusion']}, "
             f"{_size_text(summary['input_size'])}, scored at the original label size.", "",
             "| | " + " | ".join(f"fold {r['fold']}" for r in folds) + " | mean |",
             "|---" * (len(folds) + 2) + "|",
             "| mIoU | " + " | ".join(_fmt(r["miou"]) for r in folds) + f" | {_fmt(summary['miou'])} |",
             "| FB-IoU | " + " | ".join(_fmt(r["fb_iou"]) for r in folds) + f" | {_fmt(summary['fb_iou'])} |", ""]
    for r in folds:
        lines += [f"## fold {r['fold']}", "", "| class | name | IoU |", "|---|---|---|"]
        lines += [f"| {c['id']} | {c['name']} | {_fmt(c['iou'])} |" for c in r["classes"]]
        lines.append("")
    atomic_write(out / "results.md", "\n".join(lines))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "fold", "shots", "class_id", "class_name", "iou"])
    for r in folds:
        for c in r["classes"]:
            writer.writerow([summary["dataset"], r["fold"], summary["shots"], c["id"], c["name"],
                             "" if c["iou"] is None else f"{c['iou']:.4f}"])
        writer.writerow([summary["dataset"], r["fold"], summary["shots"], "mean", "mIoU", f"{r['miou']:.4f}"])
    writer.writerow([summary["dataset"], "all", summary["shots"], "mean", "mIoU", f"{summary['miou']:.4f}"])
    writer.writerow([summary["dataset"], "all", summary["shots"], "fb", "FB-IoU", f"{summary['fb_iou']:.4f}"])
    atomic_write(out / "results.csv", buffer.getvalue())


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (Path, torch.device)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_episode_grid(model: nn.Module, episodes, episode_iou: list[float], fusion: str,
                      device: str | torch.device, path: Path, count: int = 4) -> None:
    """A PNG of the `count` best and `count` worst episodes, one row each.

    Columns: first support with its mask, query with its ground truth, prediction, similarity map.
    """
    from sgone import viz
    from sgone.data.episode import collate
    from sgone.data.sampler import load_episode

    order = sorted(range(len(episode_iou)), key=lambda i: (-episode_iou[i], i))
    chosen = order[:count] + [i for i in order[::-1][:count] if i not in order[:count]]
    rows, labels = [], []
    for i in chosen:
        batch = collate([episodes[i]])
        out = predict_batch(model, batch, fusion, device)
        raw = load_episode(episodes.source, episodes.specs[i])  # original-size images for display
        query, truth = raw.query_image, raw.query_mask
        pred = out["pred"].numpy().astype(np.uint8)
        if pred.shape != truth.shape:  # label and image sizes agree in every source; guard anyway
            query = np.asarray(_resize(query, pred.shape))
        sim = out["similarity"][0].numpy()
        rows.append([viz.overlay(raw.support_images[0][0], raw.support_masks[0][0], color=(0, 200, 0)),
                     viz.overlay(query, truth, color=(0, 200, 0)),
                     viz.overlay(query, pred, color=(230, 25, 75)),
                     viz.heatmap(sim, image=query, value_range=(-1, 1))])
        labels.append([f"#{i} {raw.class_names[0]}", "ground truth", f"IoU {100 * episode_iou[i]:.1f}", "similarity"])
    viz.save_png(path, viz.tile_grid(rows, labels=labels, tile=160))


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))
