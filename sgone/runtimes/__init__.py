"""Runtimes: what runs a model's protocol (`encode`, `support_prototype`, `fuse_prototypes`,
`segment`, see docs/architecture.md) under the `Predictor`.

A runtime is one module in this package with one function,

    load(model, *, device, size, threads, fuse, allow_untrained, weights, precision) -> Loaded

that turns what the user named (a registered name, a checkpoint, an nn.Module or, for runtimes
that read them, an exported folder) into an object with the model protocol, on a device. The
Predictor picks the module by name from `sgone.options.RUNTIMES` (name -> module path, the one
table) and never looks inside it: resizing, k-shot fusion, upsampling and the keep rule stay the
same code for every runtime. Adding a runtime = one module here + one entry in that table (and a
line in `auto_runtime.FASTEST` once it is measured). "auto" is itself such a module: it picks one.
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
    summaries, the device it runs on, and which runtime and precision run it (what "auto" chose)."""

    model: Any
    name: str
    device: Any  # torch.device
    runtime: str = ""
    precision: str = "auto"


def runtime(name: str) -> ModuleType:
    """The runtime module called `name` (imported now: ONNX Runtime stays unloaded under torch);
    SgoneError naming the choices otherwise."""
    return lookup(RUNTIMES, name, "runtime")


def check_shipped_precision(runtime_name: str, precision: str) -> None:
    """Runtimes that run a model only as it ships (torch, onnx): precision "auto" (or None) and nothing else."""
    if precision not in (None, "auto"):
        raise SgoneError(f"--precision {precision}: the {runtime_name} runtime runs the model as it ships "
                         "(--precision auto); fp32 and bf16 need --runtime openvino")


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
