"""Episodic training of SG-One, resumable step for step, on one process or under `torchrun`.

Determinism: the episode of (step s, rank r, item j) is TrainEpisodes index
((s - 1) * world_size + r) * batch_size + j, and TrainEpisodes draws it (and its
augmentation) from a generator seeded by that index alone. So the data of a step never
depends on what ran before, and resuming only needs the model, optimiser, scheduler and RNG
states that the checkpoint holds: a resumed run repeats the uninterrupted run's losses.

Recipes and configuration: `sgone.engine.recipes`; optimiser and losses: `optimisation`; data:
`training_data`; logs: `training_log`; the run folder: `run_folder`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from sgone.engine import distributed
from sgone.engine.checkpoint import load_checkpoint, restore_training_state, rng_state, save_checkpoint, unwrap
from sgone.engine.optimisation import (autocast_settings, build_optimizer, build_scheduler, dice_loss,
                                       freeze_backbone, segmentation_loss, set_train_mode)
from sgone.engine.recipes import TrainConfig
from sgone.engine.run_folder import check_resume, check_run_folder, clear_run_folder, seed_everything
from sgone.engine.training_data import cached_data, image_data, to_device, uses_feature_cache
from sgone.engine.training_log import Logger, save_curve
from sgone.errors import SgoneError


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
        check_resume(resume_state.get("config", {}), cfg, ckpt_path)

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
        stream, validate, val_kind = cached_data(cfg, model, source, start, info)
    else:
        stream, validate, val_kind = image_data(cfg, source, start, info, device)

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
            inputs = [to_device(x, device) for x in inputs]
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


