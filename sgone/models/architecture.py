"""What makes a model class an architecture of the zoo (`sgone.models.zoo`): its name in configs,
whether it needs training, and `from_config`, which rebuilds it from the `config` dict every
model carries (and every checkpoint stores)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch.nn as nn


class Architecture:
    """Mixin for model classes. Subclasses set `arch` (the config's "arch") and `training_free`
    (False: a head that must be trained before its masks mean anything)."""

    arch: str = ""
    training_free: bool = False

    @classmethod
    def from_config(cls, config: dict, weights: str | Path | None = "auto") -> nn.Module:
        """The model of `config` ({"arch", "backbone", "backbone_options", constructor options});
        `weights` is for the backbone: "auto" finds ImageNet weights offline, a path, or None
        (random init, e.g. before a checkpoint's state dict is loaded). Keys the constructor does
        not take are ignored (configs record derived values such as "variant"); lists become
        tuples (a config read from JSON)."""
        from sgone.backbones import build_backbone

        config = dict(config)
        name = config.pop("backbone", "mobilenet_v2")
        backbone_options = dict(config.pop("backbone_options", None) or {})
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "backbone", "config"}
        options: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                   for k, v in config.items() if k in accepted}
        base: dict[str, Any] = {"backbone": name}
        if backbone_options:
            base["backbone_options"] = backbone_options
        return cls(build_backbone(name, weights=weights, **backbone_options), config=base, **options)
