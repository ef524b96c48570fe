"""`--runtime auto` (the default): the installed runtime measured fastest for the model on this kind of
CPU, at the precision the model ships in unless one is asked for; PyTorch on a CUDA device.

`FASTEST` is the table: (kind of CPU, kind of model) -> (runtime, precision) in order of preference.
The first that loads wins; one that is not installed, not supported by the CPU or cannot export the
model is passed over silently, and PyTorch (always installed) ends every list. Its figures come from
`python benchmarks/runtime_table.py` (see benchmarks/README.md for the run they come from).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from sgone.errors import SgoneError
from sgone.inputs import is_path
from sgone.lazy import lookup
from sgone.options import DEFAULT_SIZE, PRECISIONS
from sgone.runtimes import Loaded, check_shipped_precision, resolve_device

Choice = tuple[str, str]  # (runtime, precision)

# From `OMP_NUM_THREADS=2 python benchmarks/runtime_table.py --repeats 5` on the 2-core AVX-512 (VNNI, BF16,
# no AMX) machine, quiet (2026-12-06; 1-shot episode ms, wall clock): default model torch 795, onnx 780,
# openvino 752; prototype-mobilenet_v2 torch 128, onnx 129, openvino 117. bf16 (752 -> 693 and 117 -> 76) is
# not listed: for the default model it passed the rule with DINOv2 alone in bf16 (docs/results.md), the
# whole bf16 path was only checked on the photos; for the training-free model it is unmeasured on the folds.
# "auto" precision = the model as it ships, so these picks change no mask beyond float rounding; bf16 enters a
# list only once it passes the accuracy rule of issue 24 (held-out folds and photo checks).
#   dinov2: the default model (DINOv2 int8 under ONNX Runtime + MobileNetV2 + head); cnn: the MobileNetV2 models
FASTEST: dict[str, dict[str, list[Choice]]] = {
    "avx512": {"dinov2": [("openvino", "auto")], "cnn": [("openvino", "auto")]},
}
DEFAULT_CHOICES: list[Choice] = []  # a CPU kind not measured yet: PyTorch (add its row once runtime_table.py ran there)


@functools.cache
def isa_flags() -> dict[str, bool]:
    """The CPU's vector extensions that decide the choice (Linux: /proc/cpuinfo; elsewhere torch's view)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    except OSError:
        flags = set()
    if not flags:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability()).lower()
        flags = {"avx512f"} if "avx512" in capability else ({"avx2"} if "avx2" in capability else set())
    return {"AVX2": "avx2" in flags, "AVX-512": "avx512f" in flags, "VNNI": "avx512_vnni" in flags or "avx_vnni" in flags,
            "BF16": "avx512_bf16" in flags or "amx_bf16" in flags, "AMX": "amx_tile" in flags}


def cpu_kind(flags: dict[str, bool] | None = None) -> str:
    """"avx512" or "other": the rows of `FASTEST`."""
    flags = isa_flags() if flags is None else flags
    return "avx512" if flags["AVX-512"] else "other"


def model_kind(module: nn.Module) -> str:
    """"dinov2" for a model whose backbone runs DINOv2, else "cnn"."""
    return "dinov2" if hasattr(getattr(module, "backbone", None), "semantic") else "cnn"


def candidates(cpu: str, kind: str, precision: str = "auto") -> list[Choice]:
    """What to try, in order; a precision other than "auto" keeps the runtimes that offer it."""
    listed = FASTEST.get(cpu, {}).get(kind, DEFAULT_CHOICES)
    if precision == "auto":
        return [*listed, ("torch", "auto")]
    return [("openvino", precision)]  # the one runtime with a choice of precision


CONVERT: dict[str, str] = {  # runtime -> (prepared module, size, threads, precision) -> its model
    "onnx": "sgone.runtimes.auto_runtime:_onnx",
    "openvino": "sgone.runtimes.openvino_runtime:openvino_model",
}


def _onnx(module: nn.Module, size: int, threads: int | None, precision: str) -> Any:
    from sgone.runtimes.onnx_runtime import onnx_model

    return onnx_model(module, size, threads)


def load(model: Any, *, device: Any = "cpu", size: int | None = None, threads: int | None = None,
         fuse: bool = True, allow_untrained: bool = False, weights: Any = "auto", precision: str = "auto") -> Loaded:
    """The first runtime of `candidates` that takes the model (see the module docstring); a precision
    no installed runtime offers raises the last one's one-line reason."""
    from sgone.runtimes import runtime, torch_runtime

    if precision not in PRECISIONS:
        raise SgoneError(f"--precision {precision}: unknown precision (use one of: {', '.join(PRECISIONS)})")
    device = resolve_device(device)
    if precision != "auto" and device.type == "cpu":  # a precision only OpenVINO runs: checked before loading
        from sgone.runtimes.openvino_runtime import check_precision, require_openvino

        require_openvino()
        check_precision(precision)
    if device.type != "cpu":  # training and CUDA stay PyTorch
        check_shipped_precision("torch (on CUDA)", precision)
        return torch_runtime.load(model, device=device, fuse=fuse, allow_untrained=allow_untrained, weights=weights)
    if is_path(model) and Path(model).is_dir():  # an exported folder: OpenVINO, else ONNX Runtime
        tries: list[Callable[[], Loaded]] = [
            lambda: runtime("openvino").load(model, threads=threads, precision=precision),
            lambda: runtime("onnx").load(model, threads=threads, precision=precision)]
        return _first(tries)
    loaded = torch_runtime.load(model, device=device, fuse=fuse, allow_untrained=allow_untrained, weights=weights)
    if not isinstance(loaded.model, nn.Module):
        return loaded
    module = loaded.model

    def convert(name: str, prec: str) -> Loaded:
        if name == "torch":
            check_shipped_precision("torch", prec)
            return Loaded(module, loaded.name, loaded.device, "torch")
        made = lookup(CONVERT, name, "runtime")(module, size or DEFAULT_SIZE, threads, prec)
        return Loaded(made, loaded.name, loaded.device, name, prec)

    return _first([functools.partial(convert, *choice)
                   for choice in candidates(cpu_kind(), model_kind(module), precision)])


def _first(tries: list[Callable[[], Loaded]]) -> Loaded:
    error: SgoneError | None = None
    for attempt in tries:
        try:
            return attempt()
        except SgoneError as exc:  # not installed, not on this CPU, not exportable: the next one
            error = exc
    assert error is not None
    raise error
