"""Model set-up for training: frozen parts, parameter groups, optimiser and schedule, losses, autocast."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from sgone.engine.checkpoint import unwrap
from sgone.engine.recipes import TrainConfig
from sgone.errors import SgoneError


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
