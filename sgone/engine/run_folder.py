"""A training run's folder: checked before the run, cleared on --overwrite, a resume checked against it; seeds."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgone.engine.recipes import TrainConfig
from sgone.errors import SgoneError


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


def check_resume(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume with settings that change what the steps compute."""
    keys = ("dataset", "root", "source_options", "backbone_options", "fold", "backbone", "arch", "variant", "shots", "balance",
            "recipe", "steps", "batch_size", "aux_weight", "dice_weight",
            "size", "lr", "weight_decay", "optimizer", "schedule", "warmup", "freeze", "seed")
    if cfg.schedule == "constant" and not cfg.warmup:
        keys = tuple(k for k in keys if k != "steps")  # nothing depends on the total: a run may be extended
    changed = [f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}" for k in keys if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        raise SgoneError(f"{path}: cannot resume with different settings ({'; '.join(changed)})")
