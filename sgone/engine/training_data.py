"""The training run's data: step-indexed batches (images, or features from the cache) and the validation episodes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from sgone.engine import distributed
from sgone.engine.checkpoint import unwrap
from sgone.engine.recipes import TrainConfig, VAL_SEED_OFFSET
from sgone.errors import SgoneError


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


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, (list, tuple)):
        return [t.to(device, non_blocking=True) for t in x]
    return x.to(device, non_blocking=True)


def image_data(cfg: TrainConfig, source: Any, start: int, info, device: torch.device):
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


def cached_data(cfg: TrainConfig, model: nn.Module, source: Any, start: int, info):
    """As image_data, from a FeatureCache of the frozen backbone (filled first: every unreadable image
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
