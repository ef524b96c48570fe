"""Episodic training of SG-One, resumable step for step, on one process or under `torchrun`.

Determinism: the episode of (step s, rank r, item j) is TrainEpisodes index
((s - 1) * world_size + r) * batch_size + j, and TrainEpisodes draws it (and its
augmentation) from a generator seeded by that index alone. So the data of a step never
depends on what ran before, and resuming only needs the model, optimiser, scheduler and RNG
states that the checkpoint holds: a resumed run repeats the uninterrupted run's losses.

Recipes (defaults; every field can be overridden):
- "published": the public SG-One code. SGD momentum 0.99, weight decay 5e-4, lr 1e-5 with
  x2 for biases and x10 (x20 for its bias) for the guidance conv "fc6"; batch 1; constant
  lr; images at their own size; whole network trained (BatchNorm statistics frozen: batch 1).
- "modern": AdamW lr 1e-3 (weight decay 1e-4, none on biases), batch 8 at 321 px,
  backbone frozen (weights and BatchNorm statistics), 5 % linear warm-up then cosine decay.
- "real": arch "sgone-prior" (PriorGuidedSGOne: the head starts as the training-free model
  and learns a correction), the modern optimiser at 353 px, backbone frozen with its features
  read from a FeatureCache (a step costs the head only), loss = cross-entropy + Dice + 0.5 x
  guidance loss. The recipe of the shipped `sgone-mobilenet_v2-real` (docs/results.md).
The loss ignores 255 pixels for variant "fixed"; variant "published" trains them as object.

Why "modern" (measured with `benchmarks/train_speed.py`, mobilenet_v2 ImageNet, synthetic
fold 0 at 128 px, one thread of a shared 2-core CPU; mIoU on 100 seen-class val episodes /
100 unseen-class test episodes, with the episode lists before commit 37adaa3, which covered 5
of the 30 seen and 5 of the 10 unseen classes):
    recipe                                   episodes  minutes  val mIoU  test mIoU  test FB-IoU
    published (SGD 1e-5, batch 1)               1200     16.4      0.0       0.0       46.5
    modern, backbone frozen                     1200      7.9     39.8      28.8       60.7
    modern, backbone trained (bn, lr x0.1)      1200     15.3     50.1      32.6       63.4
    modern, backbone frozen                     2400     10.5     53.4      33.3       63.7
    training-free prototype-mobilenet_v2          -        -        -       18.8       43.8
The published settings (made for ~100k steps) have not left the all-background solution
after 1200 episodes; AdamW does within ~30 steps. Freezing the backbone makes an episode
2-3x cheaper (3.4 vs 1.2 episodes/s at 128 px, batch 8; at 321 px modern trains 0.65 and
published 0.34 episodes/s), and in equal time it scores better than training the backbone.
On a GPU, where time is cheaper, `--freeze bn` may pay off.

Validation (every `val_every` steps, best.pt kept by mIoU): a fixed list of `val_episodes`
episodes of the fold's SEEN classes drawn from the "val" image split, so no image of it is
trained on and no unseen (test) class is used to pick the checkpoint. Sources whose seen
classes have too few "val" images fall back to the "train" split under another seed (then
it measures fit, not generalisation; the log says so).
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgone.engine import distributed
from sgone.engine.checkpoint import load_checkpoint, restore_training_state, rng_state, save_checkpoint, unwrap
from sgone.errors import SgoneError

RECIPES: dict[str, dict[str, Any]] = {
    "published": {"optimizer": "sgd", "lr": 1e-5, "momentum": 0.99, "weight_decay": 5e-4, "batch_size": 1,
                  "size": None, "freeze": "bn", "schedule": "constant", "warmup": 0.0, "arch": "sgone",
                  "aux_weight": 0.0, "dice_weight": 0.0, "backbone_options": {}},
    "modern": {"optimizer": "adamw", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 8,
               "size": 321, "freeze": "all", "schedule": "cosine", "warmup": 0.05, "arch": "sgone",
               "aux_weight": 0.0, "dice_weight": 0.0, "backbone_options": {}},
    # SG-One with the training-free prior (PriorGuidedSGOne) on cached frozen features: the recipe
    # that trains on real photos on 2 CPU cores (docs/results.md, "SG-One on real photos")
    "real": {"optimizer": "adamw", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 8,
             "size": 353, "freeze": "all", "schedule": "cosine", "warmup": 0.05, "arch": "sgone-prior",
             "aux_weight": 0.5, "dice_weight": 1.0, "backbone_options": {"high_stride": 16}},
}
FREEZE = ("all", "bn", "none")
VAL_SEED_OFFSET = 1_000_003  # validation episodes use another seed than the training stream


@dataclass
class TrainConfig:
    """Everything a training run depends on. `None` fields take the recipe's default."""

    dataset: str = "synthetic"
    root: str | None = None
    fold: int = 0
    backbone: str = "mobilenet_v2"
    arch: str | None = None             # "sgone" | "sgone-prior" (recipe default)
    backbone_options: dict | None = None  # e.g. {"high_stride": 16} (recipe default)
    aux_weight: float | None = None     # weight of the guidance loss (sgone-prior; recipe default)
    dice_weight: float | None = None    # weight of the Dice loss added to cross-entropy (recipe default)
    variant: str = "fixed"
    weights: str | None = "auto"        # backbone init: "auto" (ImageNet, offline), None (random), or a path
    shots: int = 1
    balance: str = "pairs"              # training episodes: "pairs" (image, class) uniform, or "source" (mix)
    recipe: str = "modern"
    steps: int = 20000
    batch_size: int | None = None
    size: int | None = -1               # -1 = the recipe's size; None = each image at its own size
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    optimizer: str | None = None        # "sgd" | "adamw"
    schedule: str | None = None         # "constant" | "cosine" | "poly"
    warmup: float | None = None         # fraction of steps (or a step count if >= 1) of linear warm-up
    freeze: str | None = None           # backbone: "all" | "bn" | "none"
    backbone_lr_mult: float = 0.1       # backbone lr relative to the head's when it trains (modern)
    amp: bool | None = None             # None = on for CUDA (bf16, else fp16 + scaler), off on CPU
    out: str = "runs/train"
    resume: bool | str = False          # True = out/last.pt; a path = that checkpoint
    overwrite: bool = False             # start again in a folder that holds a run
    feature_cache: str | None = "auto"  # frozen backbone: its features cached here ("auto": user cache; None: off)
    ckpt_every: int = 1000
    ckpt_minutes: float = 5.0           # also write last.pt after this much wall time (0 = off)
    val_every: int = 1000
    val_episodes: int = 100
    log_every: int = 1
    seed: int = 0
    device: str = "auto"
    workers: int = 0                    # DataLoader workers (episodes are deterministic per index anyway)
    progress: bool = True
    source_options: dict = field(default_factory=dict)

    @classmethod
    def from_any(cls, config: "TrainConfig | dict[str, Any]") -> "TrainConfig":
        if isinstance(config, cls):
            return cls(**asdict(config))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise SgoneError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**config)

    def resolved(self) -> "TrainConfig":
        """A copy with the recipe's defaults filled in and the values checked."""
        if self.recipe not in RECIPES:
            raise SgoneError(f"unknown recipe '{self.recipe}': use one of {', '.join(RECIPES)}")
        recipe = RECIPES[self.recipe]
        cfg = TrainConfig.from_any(self)
        for key in ("lr", "weight_decay", "momentum", "optimizer", "schedule", "warmup", "freeze", "batch_size",
                    "arch", "aux_weight", "dice_weight", "backbone_options"):
            if getattr(cfg, key) is None:
                setattr(cfg, key, recipe[key])
        if cfg.size == -1:
            cfg.size = recipe["size"]
        if cfg.freeze not in FREEZE:
            raise SgoneError(f"unknown freeze mode '{cfg.freeze}': use one of {', '.join(FREEZE)}")
        if cfg.optimizer not in ("sgd", "adamw"):
            raise SgoneError(f"unknown optimizer '{cfg.optimizer}': use sgd or adamw")
        if cfg.schedule not in ("constant", "cosine", "poly"):
            raise SgoneError(f"unknown schedule '{cfg.schedule}': use constant, cosine or poly")
        if cfg.steps < 1 or cfg.batch_size < 1 or cfg.shots < 1:
            raise SgoneError("steps, batch size and shots must be at least 1")
        if cfg.size is None and cfg.batch_size > 1:
            raise SgoneError("images at their own size (no --size) need --batch-size 1")
        return cfg


# ---------------------------------------------------------------------------------------------
# Model set-up


def freeze_backbone(model: nn.Module, mode: str) -> None:
    """mode "all": backbone weights fixed; "bn": its BatchNorm layers fixed; "none": all trainable."""
    backbone = unwrap(model).backbone
    for module in backbone.modules():
        is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for p in module.parameters(recurse=False):
            p.requires_grad_(mode == "none" or (mode == "bn" and not is_norm))


def set_train_mode(model: nn.Module, freeze: str) -> None:
    """model.train(), except that frozen parts keep eval behaviour (fixed BatchNorm statistics)."""
    model.train()
    backbone = unwrap(model).backbone
    if freeze == "all":
        backbone.eval()
    elif freeze == "bn":
        for module in backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimiser groups with per-group lr multipliers ("lr_mult") and weight decay.

    published: biases x2, guidance ("fc6") weights x10 and biases x20, decay on all (as the
    public code). modern: backbone x backbone_lr_mult, no decay on biases and norm weights.
    """
    bare = unwrap(model)
    guidance = {id(p) for p in bare.guidance.parameters()} if hasattr(bare, "guidance") else set()
    backbone = {id(p) for p in bare.backbone.parameters()}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in bare.named_parameters():
        if not p.requires_grad:
            continue
        is_bias = name.endswith(".bias") or p.ndim == 1
        if cfg.recipe == "published":
            mult = (20.0 if is_bias else 10.0) if id(p) in guidance else (2.0 if is_bias else 1.0)
            decay = cfg.weight_decay
        else:
            mult = cfg.backbone_lr_mult if id(p) in backbone else 1.0
            decay = 0.0 if is_bias else cfg.weight_decay
        groups.setdefault((mult, decay), []).append(p)
    if not groups:
        raise SgoneError("the model has no trainable parameters (training-free model or everything frozen)")
    return [{"params": ps, "lr": cfg.lr * mult, "lr_mult": mult, "weight_decay": decay}
            for (mult, decay), ps in sorted(groups.items())]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based): warm-up, then the schedule."""
    warmup = int(cfg.warmup * cfg.steps) if cfg.warmup < 1 else int(cfg.warmup)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, cfg.steps - warmup))
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return (1.0 - progress) ** 0.9  # poly, as DeepLab/PFENet


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, variant: str = "fixed") -> torch.Tensor:
    """2-class cross-entropy on logits (B,2,h,w) upsampled bilinearly to the labels (B,H,W).

    "fixed": 255 pixels are ignored. "published": label = mask > 0 as the public code, so the
    255 boundary band counts as object.
    """
    logits = F.interpolate(logits.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    if variant == "published":
        return F.cross_entropy(logits, (masks > 0).long())
    if not (masks != 255).any():
        return logits.sum() * 0.0  # an all-ignore batch: no signal, but keep the graph for DDP
    return F.cross_entropy(logits, masks.long(), ignore_index=255)


def dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the foreground per episode (255 ignored), averaged: logits (B,2,h,w), masks (B,H,W).

    Cross-entropy alone is dominated by the background and lets a head trade small objects for
    a safe background; Dice weighs every episode's object the same, whatever its size.
    """
    logits = F.interpolate(logits.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    prob = logits.softmax(dim=1)[:, 1]
    valid = (masks != 255).float()
    target = (masks == 1).float()
    inter = (prob * target * valid).flatten(1).sum(1)
    total = ((prob + target) * valid).flatten(1).sum(1)
    return (1 - (2 * inter + 1) / (total + 1)).mean()


def autocast_settings(device: torch.device, amp: bool | None) -> tuple[bool, torch.dtype]:
    """(enabled, dtype): CUDA bf16 where supported else fp16; CPU bf16 only when asked."""
    if device.type == "cuda":
        enabled = amp is not False
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return enabled, dtype
    return bool(amp), torch.bfloat16


# ---------------------------------------------------------------------------------------------
# Data


class StepBatches(torch.utils.data.Sampler):
    """Index lists for steps start+1..end: rank r of `world` takes its own slice of each step."""

    def __init__(self, start: int, end: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.end, self.batch_size, self.rank, self.world = start, end, batch_size, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start + 1, self.end + 1):
            first = ((step - 1) * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.end - self.start)


class _ValidationView:
    """A Source seen through another lens: its "test" classes are the fold's seen classes, and
    optionally its "val" split is read from another split."""

    def __init__(self, source, split: str = "val") -> None:
        self._source, self._split = source, split

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def classes(self, fold: int, role: str) -> list[int]:
        return self._source.classes(fold, "train")

    def items(self, split: str, class_id: int) -> list[str]:
        return self._source.items(self._split if split == "val" else split, class_id)


def validation_episodes(source, cfg: TrainConfig) -> tuple[Any, str]:
    """(TestEpisodes of the seen classes, description); see the module docstring."""
    from sgone.data.sampler import TestEpisodes
    from sgone.data.transforms import EvalTransform

    transform = EvalTransform(cfg.size)
    common = dict(shots=cfg.shots, ways=1, episodes=cfg.val_episodes, style="hsnet", transform=transform)
    if getattr(source, "val_is_train", False):  # e.g. mix: one image list for both splits
        eps = TestEpisodes(_ValidationView(source, "train"), cfg.fold, seed=cfg.seed + VAL_SEED_OFFSET, **common)
        return eps, "seen classes, train images (the data set has no val split: measures fit)"
    try:
        eps = TestEpisodes(_ValidationView(source, "val"), cfg.fold, seed=cfg.seed + VAL_SEED_OFFSET, **common)
        return eps, "seen classes, val split"
    except SgoneError:
        eps = TestEpisodes(_ValidationView(source, "train"), cfg.fold, seed=cfg.seed + VAL_SEED_OFFSET, **common)
        return eps, "seen classes, train split (no val images: measures fit)"


# ---------------------------------------------------------------------------------------------
# Logs


class Logger:
    """JSONL log (always), TensorBoard events when `torch.utils.tensorboard` imports; rank 0 only."""

    def __init__(self, out: Path, resume_step: int | None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.writer = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # drop what the interrupted run logged after its last checkpoint: those steps run again
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step)
        except Exception:  # tensorboard not installed: the JSONL log is the record
            self.writer = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def save_curve(records: list[dict[str, Any]], path: Path) -> None:
    """training_curve.png: the loss (raw and a moving average) above validation mIoU, vs step."""
    from sgone import viz

    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    vals = [(r["step"], r["val_miou"]) for r in records if "val_miou" in r]
    panels = []
    if losses:
        steps, values = zip(*losses)
        series = {"loss": (list(steps), list(values))}
        window = len(values) // 20
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid").tolist()
            series[f"mean of {window}"] = (list(steps[window - 1:]), smooth)
        panels.append(viz.line_plot(series, title="training loss", xlabel="step", ylabel="loss"))
    if vals:
        steps, values = zip(*vals)
        panels.append(viz.line_plot({"val mIoU": (list(steps), list(values))},
                                    title="validation mIoU (seen classes)", xlabel="step", ylabel="mIoU %"))
    if panels:
        viz.save_png(path, np.concatenate(panels, axis=0))


# ---------------------------------------------------------------------------------------------
# The loop


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_run_folder(out: Path, resume: bool | str, overwrite: bool) -> None:
    """Refuse to start a new run where one is already (its checkpoints would be mixed with ours)."""
    marks = [name for name in ("last.pt", "best.pt", "log.jsonl", "config.json") if (out / name).exists()]
    if not marks or resume:
        return
    if not overwrite:
        raise SgoneError(f"{out}: holds a run ({', '.join(marks)}); use --resume to continue it or "
                         "--overwrite to start again")


def clear_run_folder(out: Path) -> None:
    """--overwrite, once the new run is ready to start: the old run's checkpoints and events go."""
    import shutil

    for name in ("last.pt", "best.pt"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)


def uses_feature_cache(cfg: TrainConfig, model: nn.Module, source: Any) -> bool:
    """Frozen backbone + a model that runs from backbone outputs + a source that names its files."""
    return (cfg.feature_cache is not None and cfg.freeze == "all" and hasattr(unwrap(model), "encode_levels")
            and hasattr(source, "image_path") and cfg.size is not None
            and getattr(unwrap(model), "variant", "fixed") == "fixed")  # "published" reads 255 as object


def feature_cache_folder(setting: str) -> Path:
    if setting == "auto":
        from sgone.io import user_cache_dir

        return user_cache_dir() / "features"
    return Path(setting)


def train(config: TrainConfig | dict[str, Any], *, model: nn.Module | None = None, source: Any = None,
          on_step: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train and return {"out", "step", "best_metric", "losses": [(step, loss)], "val": [(step, mIoU)]}.

    model / source: pass ready objects (tests, notebooks); by default they are built from the
    config. on_step(step, record) runs after every step on every rank (raise in it to stop).
    Under torchrun (WORLD_SIZE > 1) the process group is set up here and left afterwards.
    last.pt is written every `ckpt_every` steps, every `ckpt_minutes` of wall time and on
    Ctrl-C (KeyboardInterrupt), which is then raised again.
    """
    cfg = TrainConfig.from_any(config).resolved()
    info = distributed.init_distributed(cfg.device)
    device = info.device
    seed_everything(cfg.seed + info.rank)
    out = Path(cfg.out)
    if info.is_main:
        check_run_folder(out, cfg.resume, cfg.overwrite)

    resume_state = None
    if cfg.resume:
        ckpt_path = out / "last.pt" if cfg.resume is True else Path(cfg.resume)
        resume_state = load_checkpoint(ckpt_path, map_location="cpu")
        _check_resume(resume_state.get("config", {}), cfg, ckpt_path)

    if source is None:
        from sgone.data.sources import build_source

        source = build_source(cfg.dataset, cfg.root, **cfg.source_options)
        for note in getattr(source, "notes", ()):
            if info.is_main:
                print(f"note: {note}")
    if model is None:
        from sgone.models.registry import build_model

        # a resumed run overwrites every weight, so skip looking for ImageNet files then
        weights = None if resume_state is not None else cfg.weights
        options = {"variant": cfg.variant} if cfg.arch == "sgone" else {}
        model = build_model(cfg.arch, cfg.backbone, weights=weights, backbone_options=cfg.backbone_options, **options)
    if getattr(model, "config", {}).get("arch") == "prototype":
        raise SgoneError("the training-free model (arch 'prototype') has nothing to train; evaluate it instead")
    variant = getattr(model, "config", {}).get("variant", cfg.variant)
    aux = cfg.aux_weight if getattr(model, "config", {}).get("arch") == "sgone-prior" else 0.0

    freeze_backbone(model, cfg.freeze)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    amp_enabled, amp_dtype = autocast_settings(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_enabled and amp_dtype == torch.float16)

    start, best, val_history = 0, None, []
    if resume_state is not None:
        start = restore_training_state(resume_state, model, optimizer, scheduler, scaler, rank=info.rank)
        best = resume_state.get("best_metric")
        val_history = [tuple(v) for v in resume_state.get("history", {}).get("val_miou", [])]

    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    cached = uses_feature_cache(cfg, model, source)
    if not cached and getattr(source, "val_is_train", False):
        # the rule that keeps a fold's test classes out of training (255 in every mask) lives in the cached path
        raise SgoneError(f"{cfg.dataset}: trains only with the frozen backbone's feature cache (--freeze all, a "
                         "--size, --variant fixed, --feature-cache not none), which keeps the fold's test classes out")
    if cached:
        stream, validate, val_kind = _cached_data(cfg, model, source, start, info)
    else:
        stream, validate, val_kind = _image_data(cfg, model, source, start, info, device)

    if cfg.overwrite and resume_state is None and info.is_main:
        clear_run_folder(out)
    logger = Logger(out, start if resume_state is not None else None, enabled=info.is_main)
    if info.is_main:
        from sgone.io import atomic_write

        atomic_write(out / "config.json", json.dumps({**asdict(cfg), "validation": val_kind, "feature_cache_used": cached,
                                                      "world_size": info.world_size}, indent=2) + "\n")

    def checkpoint(step: int, path: Path) -> None:
        rngs = distributed.all_gather_object(rng_state())  # every rank's states, collective
        if info.is_main:
            save_checkpoint(path, model, optimizer=optimizer, scheduler=scheduler,
                            scaler=scaler if scaler.is_enabled() else None, step=step, rng=rngs,
                            config=asdict(cfg), best_metric=best, history={"val_miou": val_history})
        distributed.barrier()

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc=f"train fold {cfg.fold}", dynamic_ncols=True,
               disable=not (cfg.progress and info.is_main))
    losses: list[tuple[int, float]] = []
    step = done = saved = start
    tick = last_save = time.perf_counter()
    interrupted = _InterruptAtStepEnd()
    try:
        for step, inputs, labels in stream:
            set_train_mode(train_model, cfg.freeze)
            inputs = [_to(x, device) for x in inputs]
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_enabled):
                out_dict = train_model(*inputs, from_levels=True) if cached else train_model(*inputs)
            loss = segmentation_loss(out_dict["logits"], labels, variant)
            if cfg.dice_weight:
                loss = loss + cfg.dice_weight * dice_loss(out_dict["logits"], labels)
            if aux:
                from sgone.models.sgone_net import guidance_loss

                loss = loss + aux * guidance_loss(out_dict["similarity"], labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            done = step

            loss_value = float(distributed.all_reduce_sum(loss.detach().float(), device)) / info.world_size
            if not math.isfinite(loss_value):
                raise SgoneError(f"the loss became {loss_value} at step {step}; lower the learning rate (--lr)")
            # episodes per second over load + step (validation and checkpoints are left out)
            speed = cfg.batch_size * info.world_size / max(time.perf_counter() - tick, 1e-9)
            lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)
            record = {"step": step, "loss": loss_value, "lr": lr, "episodes_per_s": round(speed, 3)}
            losses.append((step, loss_value))
            if step % cfg.log_every == 0 or step == cfg.steps:
                logger.log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", eps=f"{speed:.1f}", refresh=False)

            if validate is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                distributed.broadcast_buffers(model)  # one set of BatchNorm statistics: rank 0's
                unwrap(model).eval()  # the next step's set_train_mode switches back
                acc = validate(unwrap(model), cfg.progress and info.is_main)
                miou = 100 * acc.miou()
                val_history.append((step, miou))
                logger.log({"step": step, "val_miou": miou, "val_fb_iou": 100 * acc.fb_iou()})
                if best is None or miou > best:
                    best = miou
                    checkpoint(step, out / "best.pt")
            timed = cfg.ckpt_minutes > 0 and time.perf_counter() - last_save >= 60 * cfg.ckpt_minutes
            if info.enabled and cfg.ckpt_minutes > 0:  # checkpoint() is collective: every rank must agree
                timed = bool(distributed.broadcast_object(timed))
            if step % cfg.ckpt_every == 0 or step == cfg.steps or timed:
                checkpoint(step, out / "last.pt")
                saved, last_save = step, time.perf_counter()
            if on_step is not None:
                on_step(step, record)
            if interrupted():
                raise KeyboardInterrupt
            tick = time.perf_counter()
    except KeyboardInterrupt:
        # keep what was learnt: the state after the last finished step resumes exactly
        if done > saved and not info.enabled:
            checkpoint(done, out / "last.pt")
            bar.write(f"interrupted: wrote {out / 'last.pt'} at step {done} (continue with --resume)")
        raise
    finally:
        interrupted.restore()
        bar.close()
        logger.close()
    distributed.broadcast_buffers(model)  # every rank returns the model that rank 0 saved
    unwrap(model).eval()
    if info.is_main:
        save_curve(logger.records(), out / "training_curve.png")
    distributed.barrier()
    return {"out": str(out), "step": step, "best_metric": best, "losses": losses, "val": val_history,
            "validation": val_kind, "world_size": info.world_size, "rank": info.rank, "feature_cache": cached,
            "start": start}


class _InterruptAtStepEnd:
    """Ctrl-C (SIGINT) during a step only sets a flag, read at the end of the step, so the Ctrl-C
    checkpoint never holds a half-applied update. Main thread only; `restore()` puts the old handler back."""

    def __init__(self) -> None:
        import signal
        import threading

        self.flag, self.old = False, None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, frame) -> None:
        self.flag = True

    def __call__(self) -> bool:
        return self.flag

    def restore(self) -> None:
        import signal

        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            self.old = None


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, (list, tuple)):
        return [t.to(device, non_blocking=True) for t in x]
    return x.to(device, non_blocking=True)


def _image_data(cfg: TrainConfig, model: nn.Module, source: Any, start: int, info, device: torch.device):
    """(stream of (step, model inputs, labels), validate(model, progress) -> accumulator or None, description)."""
    from sgone.data.episode import collate
    from sgone.data.sampler import TrainEpisodes
    from sgone.data.transforms import TrainTransform

    dataset = TrainEpisodes(source, cfg.fold, shots=cfg.shots, ways=1, seed=cfg.seed, balance=cfg.balance,
                            transform=TrainTransform(cfg.size), length=cfg.steps * cfg.batch_size * info.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(start, cfg.steps, cfg.batch_size, info.rank, info.world_size),
        collate_fn=collate, num_workers=cfg.workers, pin_memory=device.type == "cuda",
        # its own generator: making an iterator must not draw from the global RNG (resume parity)
        generator=torch.Generator().manual_seed(cfg.seed))

    def stream():
        for step, batch in enumerate(loader, start=start + 1):
            # (B,K,3,S,S) supports of way 1, their masks, the queries
            yield step, (batch["support_images"][:, 0], batch["support_masks"][:, 0], batch["query_image"]), \
                batch["query_mask"]

    if not (cfg.val_every > 0 and cfg.val_episodes > 0):
        return stream(), None, "none"
    val_set, val_kind = validation_episodes(source, cfg)

    def validate(bare: nn.Module, progress: bool):
        from sgone.engine.episode_eval import score_episodes

        return score_episodes(bare, val_set, "avg", device, progress=progress, desc="validate")[0]

    return stream(), validate, val_kind


def _cached_data(cfg: TrainConfig, model: nn.Module, source: Any, start: int, info):
    """As _image_data, from a FeatureCache of the frozen backbone (filled first: every unreadable image
    is listed at once and nothing is trained)."""
    from sgone.engine.cached_episodes import CachedTrainBatches, LabelMaps, score_cached
    from sgone.engine.feature_cache import FeatureCache

    backbone = unwrap(model).backbone
    cache = FeatureCache(feature_cache_folder(cfg.feature_cache), backbone, cfg.size, device=info.device)
    batches = CachedTrainBatches(source, cfg.fold, cache, shots=cfg.shots, batch_size=cfg.batch_size, seed=cfg.seed,
                                 balance=cfg.balance)
    val_set, val_kind = (validation_episodes(source, cfg) if cfg.val_every > 0 and cfg.val_episodes > 0
                         else (None, "none"))
    keys = set(batches.image_keys())
    if val_set is not None:
        keys |= {k for spec in val_set.specs for k in [spec["query"], *spec["supports"][0]]}
    if info.is_main:
        problems = cache.fill([source.image_path(k) for k in sorted(keys)], progress=cfg.progress)
        if problems:
            raise SgoneError("cannot train: " + str(len(problems)) + " image(s) cannot be read\n" + "\n".join(problems))
    distributed.barrier()

    def stream():
        for step in range(start + 1, cfg.steps + 1):
            b = batches.batch(step, info.rank, info.world_size)
            yield step, (b["support_levels"], b["support_masks"], b["query_levels"]), b["query_mask"]

    if val_set is None:
        return stream(), None, "none"
    labels = LabelMaps(source, cfg.size)

    def validate(bare: nn.Module, progress: bool):
        return score_cached(bare, source, val_set.specs, cache, labels, progress=progress, desc="validate")[0]

    return stream(), validate, val_kind + ", cached features"


def _check_resume(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume with settings that change what the steps compute."""
    keys = ("dataset", "root", "source_options", "backbone_options", "fold", "backbone", "arch", "variant", "shots", "balance",
            "recipe", "steps", "batch_size", "aux_weight", "dice_weight",
            "size", "lr", "weight_decay", "optimizer", "schedule", "warmup", "freeze", "seed")
    if cfg.schedule == "constant" and not cfg.warmup:
        keys = tuple(k for k in keys if k != "steps")  # nothing depends on the total: a run may be extended
    changed = [f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}" for k in keys if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        raise SgoneError(f"{path}: cannot resume with different settings ({'; '.join(changed)})")
