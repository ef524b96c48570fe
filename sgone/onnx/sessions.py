"""A model's three ONNX graphs run by ONNX Runtime sessions, behind the model protocol (the
`sgone.runtimes.onnx_runtime` runtime loads them for the Predictor).

`OnnxModel` has the torch models' `encode`, `support_prototype`, `segment` and
`fuse_prototypes`, taking and returning torch tensors, so the Predictor's glue (resizing,
k-shot fusion, upsampling, the keep rule in `sgone.ops`) is the same code for every runtime.
What executes a graph is pluggable (`session=`): ONNX Runtime here (`ort_session`), OpenVINO in
`sgone.runtimes.openvino_runtime`; both give the two calls used, `get_inputs()` and `run()`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sgone import ops
from sgone.errors import SgoneError
from sgone.onnx.graphs import GraphSpec, config_counts, prototypes_from_regions, region_inputs
from sgone.onnx.semantic import semantic_encoder, semantic_map

INSTALL_HINT = "ONNX Runtime is not installed (a dependency of sgone); reinstall sgone or: pip install onnxruntime onnx"


def require_onnxruntime(export: bool = False) -> Any:
    """The onnxruntime module (and for `export` the onnx package), or SgoneError with the install command."""
    try:
        import onnxruntime
    except ImportError:
        raise SgoneError(INSTALL_HINT) from None
    if export:
        try:
            import onnx  # noqa: F401  (the exporter and the manifest's shapes need it)
        except ImportError:
            raise SgoneError("the onnx package is not installed (a dependency of sgone); reinstall sgone or: "
                             "pip install onnx") from None
    return onnxruntime


def session_options(threads: int | None = None, spinning: bool = False) -> Any:
    """ORT options: all graph optimisations, `threads` intra-op threads (default torch's count:
    the physical cores, or OMP_NUM_THREADS), one inter-op thread (the graphs are sequential),
    no spinning."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    # no busy-waiting between ops: on the shared 2-core machine spinning threads made the encoder
    # slower (benchmarks/onnx_speed.py, encoder table); an idle machine loses little
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def ort_session(threads: int | None = None) -> Callable[[bytes | str | Path], Any]:
    """A factory: ONNX bytes or a file -> an ONNX Runtime CPU session (`session_options(threads)`)."""
    ort = require_onnxruntime()
    options = session_options(threads)

    def make(data: bytes | str | Path) -> Any:
        return ort.InferenceSession(data if isinstance(data, bytes) else str(data), options,
                                    providers=["CPUExecutionProvider"])
    return make


class OnnxModel:
    """A model's graphs (ONNX bytes or files) run by ONNX Runtime on the CPU.

    graphs: {"encoder", "prototype", "head"} -> ONNX bytes or a file path; spec: their tensor names.
    torch_prototypes: compute the support's prototypes with PyTorch (the same parts as the prototype
    graph, but k-means stops once they settle: faster where torch is at hand, as in `Predictor`);
    False runs the prototype graph, as a runtime without torch does. session: what executes a graph
    (ONNX bytes or file -> an object with ONNX Runtime's `get_inputs()` and `run(names, feeds)`;
    default `ort_session(threads)`).
    """

    variant = "fixed"

    def __init__(self, graphs: dict[str, bytes | str | Path], spec: GraphSpec, config: dict | None = None,
                 threads: int | None = None, dynamic: bool = True, torch_prototypes: bool = True,
                 semantic: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
                 session: Callable[[bytes | str | Path], Any] | None = None) -> None:
        make = session or ort_session(threads)
        self.spec, self.config, self.dynamic = spec, dict(config or {}), dynamic
        self.graphs = dict(graphs)
        self.torch_prototypes = torch_prototypes
        self.sessions = {name: make(data) for name, data in graphs.items()}
        if "semantic" in spec.inputs and semantic is None:
            raise SgoneError("this model's encoder takes DINOv2's patch map: give its DINOv2 encoder (semantic=)")
        self.semantic = semantic  # images (B,3,H,W) in [0,1] -> [DINOv2's patch map (B,384,h',w'), ...]

    @classmethod
    def from_folder(cls, folder: str | Path, threads: int | None = None,
                    session: Callable[[bytes | str | Path], Any] | None = None,
                    dinov2_session: Callable[[bytes | str | Path], Any] | None = None) -> "OnnxModel":
        """Load what `sgone export` wrote (manifest.json + graphs, and dinov2.onnx for DINOv2 models);
        `session` runs the graphs, `dinov2_session` DINOv2's file (both default ONNX Runtime)."""
        folder = Path(folder)
        info = read_manifest(folder)
        spec = GraphSpec(**{k: v if k == "arch" else tuple(v) for k, v in info["spec"].items()})
        files = {g: folder / f for g, f in info["files"].items() if g != "dinov2"}
        semantic = None
        if "dinov2" in info["files"]:
            make = dinov2_session or session or ort_session(threads)
            semantic = semantic_encoder(info["semantic"], make(folder / info["files"]["dinov2"]))
        return cls(files, spec, info["model_config"], threads, info["input"]["dynamic"], semantic=semantic,
                   session=session)

    @staticmethod
    def fuse_prototypes(prototypes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """k shots -> one, as every exported model fuses: vectors averaged, *_set parts pooled."""
        return ops.fuse_prototype_dicts(prototypes)

    def _run(self, graph: str, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        session = self.sessions[graph]
        # the exporter drops inputs a graph does not read (e.g. the mean background beside its parts)
        arrays = {i.name: np.ascontiguousarray(feeds[i.name].detach().cpu().numpy(), dtype=np.float32)
                  for i in session.get_inputs()}
        return [torch.from_numpy(out) for out in session.run(None, arrays)]

    def encode(self, images: torch.Tensor, need_side: bool = True) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,1] -> {name: (B,C,h,w)} as the torch model's encode (the side branch always runs)."""
        feeds = {"image": images}
        if self.semantic is not None:
            feeds["semantic"] = semantic_map(self.semantic, images)
        out = dict(zip(self.spec.features, self._run("encoder", feeds)))
        if not need_side:
            out.pop("side", None)
        return out

    def support_prototype(self, encoded: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """masks (B,H,W) {0,1,255} -> prototypes {name: (B,C) or (B,N,C)}, one support at a time."""
        grid = encoded[self.spec.support_features[0]].shape[-2:]
        shots = []
        for i in range(masks.shape[0]):
            feats = {name: encoded[name][i:i + 1] for name in self.spec.support_features}
            regions = region_inputs(self.spec, masks[i:i + 1], grid)
            if self.torch_prototypes:
                protos = prototypes_from_regions(config_counts(self.config), self.spec.arch, feats, regions,
                                                 kmeans=ops.region_prototypes)
                shots.append([protos[name] for name in self.spec.prototypes])
            else:
                shots.append(self._run("prototype", {**feats, **regions}))
        return {name: torch.cat([s[j] for s in shots]) for j, name in enumerate(self.spec.prototypes)}

    def segment(self, encoded: dict[str, torch.Tensor], prototype: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> {"logits": (B,2,h,w), "similarity": (B,h,w)} as the torch model's segment."""
        feeds = {name: encoded[name] for name in self.spec.features}
        feeds.update({name: prototype[name] for name in self.spec.prototypes})
        logits, similarity = self._run("head", feeds)
        return {"logits": logits, "similarity": similarity}


def read_manifest(folder: Path) -> dict:
    """`folder`/manifest.json, checked; SgoneError naming the file otherwise."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise SgoneError(f"{path}: not found (is {folder} a folder written by `sgone export`?)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SgoneError(f"{path}: not a readable manifest ({exc.__class__.__name__})") from None
    if not isinstance(info, dict) or info.get("format") != "sgone-onnx/1":
        raise SgoneError(f"{path}: not an sgone ONNX manifest (format sgone-onnx/1)")
    for graph, name in info["files"].items():
        if not (folder / name).is_file():
            raise SgoneError(f"{folder / name}: the {graph} graph named by {path} is missing")
    return info
