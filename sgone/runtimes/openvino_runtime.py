"""The OpenVINO runtime (CPU): the same ONNX graphs as the onnx runtime (`sgone.onnx.sessions.OnnxModel`,
exported in memory or read from a `sgone export --dynamic` folder), executed by OpenVINO instead of
ONNX Runtime; DINOv2's edited file too (`DinoV2S14.with_session`).

Precisions (`sgone.options.PRECISIONS`): "auto" runs the model as it ships: every graph in fp32 and
DINOv2 at the model's own precision (the default model's int8 file stays on ONNX Runtime, which runs
that dynamically quantised file about 2.7x faster than OpenVINO does, issue 24); "fp32" runs DINOv2's
fp32 graph in OpenVINO too; "bf16" runs everything in bf16 (only on a CPU with AVX-512 BF16 or AMX).

Two caches on disk (`cache_dir()`: user_cache_dir()/openvino): the exported graphs, keyed by the model
(config, every weight, trace size, sgone's source, torch's and onnx's versions), and the compiled
models, one file per graph, precision and thread count, keyed by a hash of the graph's bytes, the
options and OpenVINO's version. Every file's SHA-256 is recorded with it: one that does not match
(truncated, damaged) or that OpenVINO cannot import is rebuilt, never used.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch.nn as nn

from sgone.errors import SgoneError
from sgone.inputs import is_path
from sgone.options import DEFAULT_SIZE, PRECISIONS
from sgone.runtimes import Loaded, resolve_device

INSTALL_HINT = ('the openvino runtime needs the openvino package (about 60 MB): pip install "sgone[openvino]" '
                "or pip install openvino")
MAGIC = b"sgone-ov/1\n"  # cache file: MAGIC, SHA-256 of the payload (32 bytes), the payload (OpenVINO's blob)
# no int8 beyond the shipped DINOv2 file: a static QDQ int8 DINOv2 under OpenVINO ran 9 tiles in 472 ms against 481
# ms for the shipped dynamic int8 file under ONNX Runtime, with features further from fp32 (worst patch cosine 0.948
# vs 0.975; bf16: 0.9997), 1 thread, CPU clock, `python benchmarks/dinov2_int8.py --repeats 3 --clock cpu`


def require_openvino() -> Any:
    """The openvino module, or SgoneError with the install command."""
    try:
        import openvino
    except ImportError:
        raise SgoneError(INSTALL_HINT) from None
    return openvino


@functools.cache
def core() -> Any:
    """One OpenVINO Core per process (it holds the CPU plugin)."""
    return require_openvino().Core()


@functools.cache
def cpu_capabilities() -> frozenset[str]:
    """What OpenVINO's CPU plugin says this CPU computes fast: "FP32", "BF16" (AVX-512 BF16 or AMX), "INT8", ..."""
    return frozenset(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def check_precision(precision: str) -> None:
    """SgoneError (one line) for a precision this runtime does not offer or this CPU cannot run."""
    if precision not in PRECISIONS:
        raise SgoneError(f"--precision {precision}: unknown precision (use one of: {', '.join(PRECISIONS)})")
    if precision == "bf16" and "BF16" not in cpu_capabilities():
        raise SgoneError("--precision bf16: this CPU has neither AVX-512 BF16 nor AMX, which OpenVINO's bf16 needs "
                         "(use --precision fp32 or auto)")


def compile_options(precision: str, threads: int | None) -> dict[str, Any]:
    """OpenVINO CPU options: the inference precision (OpenVINO would pick bf16 by itself on AMX), one
    stream for the lowest latency, `threads` threads (default torch's count, as ONNX Runtime's)."""
    import torch

    return {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}


def cache_dir() -> Path:
    from sgone.io import user_cache_dir

    return user_cache_dir() / "openvino"


def cache_key(data: bytes | str | Path, options: dict[str, Any]) -> str:
    """Hash of the graph (its bytes, or its file's), the compile options and OpenVINO's version."""
    from sgone.io import file_digest

    graph = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else file_digest(data, "sha256")
    text = json.dumps({"graph": graph, "options": options, "openvino": require_openvino().__version__,
                       "format": MAGIC.decode().strip()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_cached(path: Path) -> bytes | None:
    """The payload of a cache file, or None when it is absent, truncated or damaged."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    head, digest, payload = raw[:len(MAGIC)], raw[len(MAGIC):len(MAGIC) + 32], raw[len(MAGIC) + 32:]
    if head != MAGIC or hashlib.sha256(payload).digest() != digest:
        return None
    return payload


def compiled_model(data: bytes | str | Path, precision: str = "fp32", threads: int | None = None,
                   folder: Path | None = None) -> Any:
    """ONNX bytes or file -> an OpenVINO CompiledModel on the CPU, through the on-disk cache: a valid
    cached blob is imported; a missing, damaged or unimportable one is compiled again and rewritten
    (atomically). A cache folder that cannot be written costs only the compile."""
    from sgone.io import atomic_write

    ov_core, options = core(), compile_options(precision, threads)
    path = Path(folder or cache_dir()) / f"{cache_key(data, options)}.blob"
    payload = read_cached(path)
    if payload is not None:
        try:
            return ov_core.import_model(payload, "CPU", options)
        except Exception:  # noqa: BLE001  (OpenVINO raises RuntimeError subclasses of its own): rebuild it
            pass
    try:
        model = ov_core.read_model(data if isinstance(data, bytes) else str(data))
        compiled = ov_core.compile_model(model, "CPU", options)
    except Exception as exc:  # noqa: BLE001
        where = "an exported graph" if isinstance(data, bytes) else str(data)
        raise SgoneError(f"{where}: OpenVINO cannot compile it ({str(exc).strip().splitlines()[0]})") from None
    try:
        blob = compiled.export_model()
        blob = blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob)
        atomic_write(path, MAGIC + hashlib.sha256(blob).digest() + blob)
    except OSError:
        pass  # a read-only cache folder: compile again next time
    return compiled


class OpenVinoSession:
    """An ONNX graph compiled by OpenVINO behind the two calls of ONNX Runtime's InferenceSession that
    sgone uses: `get_inputs()` (objects with `.name`, the ONNX input names) and
    `run(output_names | None, feeds) -> list of numpy arrays`. One infer request per thread."""

    def __init__(self, data: bytes | str | Path, precision: str = "fp32", threads: int | None = None,
                 folder: Path | None = None) -> None:
        self.compiled = compiled_model(data, precision, threads, folder)
        self.precision = precision
        # a Parameter's friendly name is the ONNX input's name (its tensor names may include a later op's)
        self._inputs = [SimpleNamespace(name=port.get_node().get_friendly_name()) for port in self.compiled.inputs]
        self._local = threading.local()

    def get_inputs(self) -> list[SimpleNamespace]:
        return list(self._inputs)

    def _output(self, name: str) -> Any:
        for port in self.compiled.outputs:
            if name in port.get_names():
                return port
        raise SgoneError(f"OpenVINO graph has no output named {name}")

    def run(self, output_names: list[str] | None, feeds: dict[str, Any]) -> list[Any]:
        import numpy as np

        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        ports = list(self.compiled.outputs) if output_names is None else [self._output(n) for n in output_names]
        inputs = {i.name: feeds[i.name] for i in self._inputs}
        results = request.infer(inputs)
        # copies: the request's buffers are reused by its next run
        return [np.array(results[port], dtype=np.float32) for port in ports]


def session_factory(precision: str, threads: int | None) -> Callable[[bytes | str | Path], OpenVinoSession]:
    """For `OnnxModel(session=...)`: ONNX bytes or file -> OpenVinoSession at `precision`."""
    compute = "bf16" if precision == "bf16" else "fp32"
    return lambda data: OpenVinoSession(data, compute, threads)


def semantic_encoder(dino: Any, precision: str, threads: int | None) -> Any:
    """DINOv2 for this runtime: the model's own ONNX Runtime session when it runs the int8 file and the
    precision is "auto" (OpenVINO runs that file slowly); otherwise its fp32 graph compiled by OpenVINO."""
    if precision == "auto" and dino.precision == "int8":
        return dino
    return dino.with_session(session_factory(precision, threads)(dino.edited_file()))


@functools.cache
def source_digest() -> str:
    """SHA-256 of sgone's own source files: a change of the exporter or of a model's code makes new graphs."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def model_digest(model: nn.Module, size: int) -> str:
    """What the exported graphs depend on: the model's class, config and every tensor of its state (the
    DINOv2 file's digest is a buffer), the trace size, sgone's source, torch's and onnx's versions."""
    import onnx
    import torch

    from sgone.backbones.weights import state_digest

    digest = hashlib.sha256(json.dumps({"class": type(model).__qualname__, "config": getattr(model, "config", {}),
                                        "size": size, "torch": torch.__version__, "onnx": onnx.__version__,
                                        "sgone": source_digest()}, sort_keys=True, default=str).encode())
    digest.update(state_digest(model).encode())
    return digest.hexdigest()[:24]


GRAPHS = ("encoder", "head")  # the prototype graph is not compiled: OnnxModel takes prototypes from torch


def exported_graphs(model: nn.Module, size: int, folder: Path | None = None) -> tuple[Any, dict[str, bytes]]:
    """`export_graphs(model, size, dynamic=True)`'s spec and encoder/head ONNX bytes, cached on disk by
    `model_digest` (tracing costs 2-4 s a model): a cached set whose files do not match their recorded
    SHA-256 is exported again."""
    from sgone.io import atomic_write
    from sgone.onnx.export import export_graphs
    from sgone.onnx.graphs import GraphSpec

    where = Path(folder or cache_dir()) / "graphs" / model_digest(model, size)
    try:
        index = json.loads((where / "index.json").read_text(encoding="utf-8"))
        graphs = {name: (where / f"{name}.onnx").read_bytes() for name in GRAPHS}
        if all(hashlib.sha256(graphs[n]).hexdigest() == index["sha256"][n] for n in GRAPHS):
            return GraphSpec(**{k: v if k == "arch" else tuple(v) for k, v in index["spec"].items()}), graphs
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: export again
    spec, exported = export_graphs(model, size, dynamic=True)
    graphs = {name: exported[name] for name in GRAPHS}
    try:
        for name in GRAPHS:
            atomic_write(where / f"{name}.onnx", graphs[name])
        atomic_write(where / "index.json", json.dumps({"spec": dataclasses.asdict(spec), "sha256": {
            n: hashlib.sha256(graphs[n]).hexdigest() for n in GRAPHS}}))
    except OSError:
        pass  # a read-only cache folder: export again next time
    return spec, graphs


def openvino_model(model: nn.Module, size: int = DEFAULT_SIZE, threads: int | None = None,
                   precision: str = "auto") -> Any:
    """A prepared torch model exported (dynamic axes; cached, `exported_graphs`) and compiled by OpenVINO.
    `size` is unused: the graphs are traced at DEFAULT_SIZE whatever the Predictor's size (their axes are
    free), so one cached export serves every size."""
    from sgone.onnx.sessions import OnnxModel, require_onnxruntime

    require_openvino()
    check_precision(precision)
    require_onnxruntime(export=True)  # the exporter's own needs
    spec, graphs = exported_graphs(model, DEFAULT_SIZE)
    semantic = semantic_encoder(model.backbone.semantic, precision, threads) if "semantic" in spec.inputs else None
    return OnnxModel(graphs, spec, getattr(model, "config", {}), threads, semantic=semantic,
                     session=session_factory(precision, threads))


def load(model: Any, *, device: Any = "cpu", size: int | None = None, threads: int | None = None,
         fuse: bool = True, allow_untrained: bool = False, weights: Any = "auto", precision: str = "auto") -> Loaded:
    """As `onnx_runtime.load` (a name, checkpoint or module exported in memory, or an exported folder),
    with OpenVINO executing the graphs at `precision`; `threads`: OpenVINO's inference threads."""
    from sgone.onnx.sessions import OnnxModel

    require_openvino()  # before loading anything: the one-line install hint
    check_precision(precision)
    device = resolve_device("cpu" if device in (None, "auto") else device)
    if device.type != "cpu":
        raise SgoneError(f"{device}: the openvino runtime runs on the CPU (use --device cpu or auto)")
    if is_path(model) and Path(model).is_dir():
        factory = session_factory(precision, threads)
        onnx = OnnxModel.from_folder(model, threads, session=factory, dinov2_session=folder_dinov2(model, precision,
                                                                                                   threads))
        if not onnx.dynamic:
            raise SgoneError(f"{model}: exported with a fixed input size; export with --dynamic for the Predictor")
        return Loaded(onnx, str(model), device, "openvino", precision)
    from sgone.runtimes import torch_runtime

    loaded = torch_runtime.load(model, device=device, fuse=fuse, allow_untrained=allow_untrained, weights=weights)
    if isinstance(loaded.model, nn.Module):
        loaded.model = openvino_model(loaded.model, DEFAULT_SIZE, threads, precision)
    loaded.runtime, loaded.precision = "openvino", precision
    return loaded


def folder_dinov2(folder: Any, precision: str, threads: int | None) -> Callable:
    """The session factory for an exported folder's dinov2.onnx: ONNX Runtime for an int8 file at "auto",
    OpenVINO otherwise; an int8 file cannot run at fp32 or bf16."""
    from sgone.onnx.sessions import read_manifest

    semantic = read_manifest(Path(folder)).get("semantic") or {}
    if semantic.get("precision") != "int8":
        return session_factory(precision, threads)
    if precision != "auto":
        raise SgoneError(f"{folder}: its dinov2.onnx is int8; run it with --precision auto, or export the model "
                         f"with an fp32 DINOv2 for --precision {precision}")
    from sgone.onnx.sessions import ort_session

    return ort_session(threads)
