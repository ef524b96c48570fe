"""Runtimes: what runs a model's protocol (`encode`, `support_prototype`, `fuse_prototypes`,
`segment`, see docs/architecture.md) under the `Predictor`.

A runtime is one module in this package with one function,

    load(model, *, device, size, threads, fuse, allow_untrained, weights) -> Loaded

that turns what the user named (a registered name, a checkpoint, an nn.Module or, for runtimes
that read them, an exported folder) into an object with the model protocol, on a device. The
Predictor picks the module by name from `sgone.options.RUNTIMES` (name -> module path, the one
table) and never looks inside it: resizing, k-shot fusion, upsampling and the keep rule stay the
same code for every runtime. Adding a runtime = one module here + one entry in that table.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from sgone.errors import SgoneError
from sgone.lazy import lookup
from sgone.options import RUNTIMES


@dataclass
class Loaded:
    """A runtime's answer: the model (the protocol's four methods), a name for messages and
    summaries, and the device it runs on."""

    model: Any
    name: str
    device: Any  # torch.device


def runtime(name: str) -> ModuleType:
    """The runtime module called `name` (imported now: ONNX Runtime stays unloaded under torch);
    SgoneError naming the choices otherwise."""
    return lookup(RUNTIMES, name, "runtime")


def resolve_device(device: Any) -> Any:
    """"auto"/None -> cuda when available, else cpu; a name -> torch.device, checked."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SgoneError(f"{device}: not a device name (use cpu, cuda, cuda:0, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SgoneError(f"{device}: CUDA is not available on this machine")
    return dev
