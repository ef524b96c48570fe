"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is one `torch.save`d dict:
  "model"        model state dict (DDP wrapper removed), what `sgone.models.registry.load_model` reads
  "model_config" `model.config`, enough to rebuild the model without the training code
  "optimizer", "scheduler", "scaler"   their state dicts (None where absent)
  "step"         number of optimiser steps done; training resumes at step + 1
  "rng"          list of per-rank RNG states (python, numpy, torch, cuda) - see `rng_state`
  "config"       the training config as a plain dict
  "best_metric"  best validation mIoU so far (None before the first validation)
  "history"      {"loss": [(step, loss)], "val_miou": [(step, miou)]} for the curve
The data of step s is a pure function of s (episodes are indexed by step), so the sampler
position is the step itself and is stored as "sampler_position" for clarity.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sgone.errors import SgoneError
from sgone.io import atomic_write


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def rng_state() -> dict[str, Any]:
    """This process's random states: python, numpy's global, torch CPU and (if used) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by `rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: Any = None, step: int = 0,
                    rng: list[dict[str, Any]] | None = None, config: dict | None = None,
                    best_metric: float | None = None, history: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint through a temp file + rename, so a kill never leaves half a file."""
    bare = unwrap(model)
    state = {
        "model": bare.state_dict(),
        "model_config": dict(getattr(bare, "config", {}) or {}),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": int(step),
        "sampler_position": int(step),
        "rng": rng if rng is not None else [rng_state()],
        "config": dict(config or {}),
        "best_metric": best_metric,
        "history": history or {},
    }
    if extra:
        state.update(extra)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict; SgoneError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise SgoneError(f"{path}: checkpoint not found")
    try:
        # weights_only=False: the file holds python/numpy RNG states; only load files you trust
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise SgoneError(f"{path}: cannot read checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise SgoneError(f"{path}: not an sgone checkpoint (no 'model' entry)")
    return state


def restore_training_state(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                           scheduler: Any = None, scaler: Any = None, rank: int = 0) -> int:
    """Load model/optimiser/scheduler/scaler/RNG from `state` (from `load_checkpoint`); returns the step."""
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    rngs = state.get("rng") or []
    if rngs:
        # one state per rank was saved; a different world size falls back to rank 0's
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    return int(state.get("step", 0))


def export_for_inference(src: str | Path, dst: str | Path, card: dict | None = None,
                         inference: dict | None = None) -> Path:
    """A training checkpoint -> a file for inference only: the weights and model config (plus `card`,
    e.g. data and recipe), without optimiser, scheduler and RNG states. `inference` updates the model
    config with inference-only options (e.g. {"head_weight": 0.25}). Written atomically."""
    state = load_checkpoint(src)
    model_config = {**state.get("model_config", {}), **(inference or {})}
    slim = {"model": state["model"], "model_config": model_config, "step": state.get("step", 0),
            "config": state.get("config", {}), "card": dict(card or {})}
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    atomic_write(dst, buffer.getvalue())
    return Path(dst)
