"""Training recipes and the run's configuration (`TrainConfig`): what `sgone train` and
`sgone.engine.trainer.train` read.

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

from dataclasses import asdict, dataclass, field, fields
from typing import Any

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
