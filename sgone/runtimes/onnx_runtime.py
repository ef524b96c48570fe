"""The ONNX Runtime runtime (CPU): a folder written by `sgone export --dynamic`, or any model the
torch runtime loads, exported in memory when it is loaded (a few seconds) and run as three graphs
(`sgone.onnx.sessions.OnnxModel`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from sgone.errors import SgoneError
from sgone.inputs import is_path
from sgone.options import DEFAULT_SIZE
from sgone.runtimes import Loaded, check_shipped_precision, resolve_device


def load(model: Any, *, device: Any = "cpu", size: int | None = None, threads: int | None = None,
         fuse: bool = True, allow_untrained: bool = False, weights: Any = "auto", precision: str = "auto") -> Loaded:
    """As `torch_runtime.load`, then exported with dynamic axes (traced at `size`); `threads`:
    ONNX Runtime's intra-op threads (default torch's)."""
    from sgone.onnx.sessions import OnnxModel, require_onnxruntime

    check_shipped_precision("onnx", precision)
    folder = is_path(model) and Path(model).is_dir()
    require_onnxruntime(export=not folder)  # before loading anything
    device = resolve_device("cpu" if device in (None, "auto") else device)
    if device.type != "cpu":
        raise SgoneError(f"{device}: the onnx runtime runs on the CPU (use --device cpu or auto)")
    if folder:
        onnx = OnnxModel.from_folder(model, threads)
        if not onnx.dynamic:
            raise SgoneError(f"{model}: exported with a fixed input size; export with --dynamic for the Predictor")
        return Loaded(onnx, str(model), device, "onnx")
    from sgone.runtimes import torch_runtime

    loaded = torch_runtime.load(model, device=device, fuse=fuse, allow_untrained=allow_untrained, weights=weights)
    if isinstance(loaded.model, nn.Module):
        # traced at the input size; other sizes and batches run through the dynamic axes
        loaded.model = onnx_model(loaded.model, size or DEFAULT_SIZE, threads)
    loaded.runtime = "onnx"
    return loaded


def onnx_model(model: nn.Module, size: int = DEFAULT_SIZE, threads: int | None = None) -> Any:
    """A prepared torch model exported in memory (dynamic axes) and loaded into ONNX Runtime."""
    from sgone.onnx.export import export_graphs
    from sgone.onnx.sessions import OnnxModel, require_onnxruntime

    require_onnxruntime(export=True)
    spec, graphs = export_graphs(model, size, dynamic=True)
    semantic = model.backbone.semantic if "semantic" in spec.inputs else None  # the model's own DINOv2 session
    return OnnxModel(graphs, spec, getattr(model, "config", {}), threads, semantic=semantic)
