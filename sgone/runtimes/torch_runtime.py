"""The PyTorch runtime: the model itself, BatchNorm folded, on any torch device."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch.nn as nn

from sgone.errors import SgoneError
from sgone.inputs import is_path
from sgone.runtimes import Loaded, check_shipped_precision, resolve_device


def load(model: Any, *, device: Any = "cpu", size: int | None = None, threads: int | None = None,
         fuse: bool = True, allow_untrained: bool = False, weights: Any = "auto", precision: str = "auto") -> Loaded:
    """A registered name, shipped checkpoint name, checkpoint path (all through
    `sgone.models.registry.load_model`; None = the default model) or an nn.Module (copied when
    `fuse` folds its BatchNorm, so the caller's module stays trainable). `weights`: the backbone's
    ImageNet file for a registered name ("auto" finds it). `size`, `threads`: unused here; `precision`: "auto" only (the model as it ships)."""
    from sgone.models.inference import prepare_for_inference
    from sgone.models.registry import load_model, model_name

    check_shipped_precision("torch", precision)
    device = resolve_device(device)
    if is_path(model) and (Path(model) / "manifest.json").is_file():
        raise SgoneError(f"{model}: an exported ONNX model; run it with runtime='onnx' (--runtime onnx)")
    if isinstance(model, nn.Module):
        module = (copy.deepcopy(model) if fuse else model).to(device).eval()
        config = getattr(module, "config", {}) or {}
        name = f"{type(module).__name__}({config.get('backbone', '?')})"
    else:
        module = load_model(model, device, weights=weights, allow_untrained=allow_untrained)
        name = model_name(model)
    if fuse:
        prepare_for_inference(module, device)
    return Loaded(module, name, device, "torch")
