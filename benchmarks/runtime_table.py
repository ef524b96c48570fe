"""One table: every runtime x precision for the default model and the training-free model, next to the
published SG-One layout, in one run, with the CPU's ISA flags and issue 24's target ratios.

Rows: `sgone-dinov2_s14-mobilenet_v2-real` (the default) and `prototype-mobilenet_v2` under
--runtime torch, onnx, openvino at each precision this CPU runs (auto = the model as it ships; fp32
differs from auto only where the model ships an int8 DINOv2; bf16 only with AVX-512 BF16 or AMX),
and the published SG-One forward (VGG-16, `published_sgone.py`) at 321x321. Columns, at 473x473
(the bundled sample's halves resized, `onnx_speed.square_episode`):

    episode ms   Predictor.set_support + predict (a one-off 1-shot episode), median of --repeats
    query ms     Predictor.predict with the support cached, median of --repeats
    load s       Predictor(...) with the runtime's caches cold (a fresh cache folder: export + compile,
                 the first use on a machine) / warm (the second and later uses)
    mask IoU     the bundled query's mask against the same model under PyTorch (1.0 = the same mask)

Calls are interleaved (row 1, row 2, ..., published, row 1, ...) so a change of machine load hits
every row alike. `auto` marks the row `--runtime auto` picks on this machine (sgone.runtimes.auto_runtime).
The targets compare the default model under auto with the training-free model under PyTorch.

    OMP_NUM_THREADS=2 python benchmarks/runtime_table.py [--repeats 9] [--threads N]
    python benchmarks/runtime_table.py --repeats 2 --no-cold          # a quick check that it runs
    OMP_NUM_THREADS=1 python benchmarks/runtime_table.py --clock cpu  # a busy machine: CPU time on one thread
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from machine import matmul_gflops
from onnx_speed import CLOCKS, square_episode
from published_sgone import PublishedSGOne, episode_inputs
from sgone.options import DEFAULT_MODEL, TRAINING_FREE_MODEL
from sgone.predictor import Predictor
from sgone.runtimes import auto_runtime

Row = tuple[str, str, str]  # model, runtime, precision


def rows_for(model: str, bf16: bool, openvino: bool) -> list[Row]:
    rows = [(model, "torch", "auto"), (model, "onnx", "auto")]
    if openvino:
        rows.append((model, "openvino", "auto"))
        if model == DEFAULT_MODEL:  # its DINOv2 ships in int8: fp32 is another computation
            rows.append((model, "openvino", "fp32"))
        if bf16:
            rows.append((model, "openvino", "bf16"))
    return rows


def load_seconds(row: Row, size: int, cold: bool) -> tuple[float | None, float, Predictor]:
    """(cold load s or None, warm load s, the predictor)."""
    model, runtime, precision = row
    cold_s = None
    if cold and runtime == "openvino":
        from sgone.runtimes import openvino_runtime

        with tempfile.TemporaryDirectory(prefix="sgone-ov-cold-") as tmp:
            kept = openvino_runtime.cache_dir
            openvino_runtime.cache_dir = lambda: Path(tmp)
            try:
                start = time.perf_counter()
                Predictor(model, size=size, runtime=runtime, precision=precision)
                cold_s = time.perf_counter() - start
            finally:
                openvino_runtime.cache_dir = kept
    start = time.perf_counter()
    predictor = Predictor(model, size=size, runtime=runtime, precision=precision)
    return cold_s, time.perf_counter() - start, predictor


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--published-size", type=int, default=321)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch's threads (the runtimes take the same)")
    parser.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold-cache loads")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (with one thread: what an idle core would take, "
                             "what a busy shared machine can still measure; loads are always wall time)")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    flags = auto_runtime.isa_flags()
    try:
        from sgone.runtimes.openvino_runtime import cpu_capabilities

        capabilities = cpu_capabilities()
        openvino = True
    except Exception:  # noqa: BLE001  (not installed: its rows are left out)
        capabilities, openvino = frozenset(), False
    print("ISA: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
          + f"; OpenVINO {'CPU capabilities ' + ' '.join(sorted(capabilities)) if openvino else 'not installed'}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '-')}; 2048^3 matmul {matmul_gflops():.0f} GFLOP/s before")
    bf16 = "BF16" in capabilities
    rows = rows_for(DEFAULT_MODEL, bf16, openvino) + rows_for(TRAINING_FREE_MODEL, bf16, openvino)
    support, mask, query = square_episode(args.size)
    predictors: dict[Row, Predictor] = {}
    loads: dict[Row, tuple[float | None, float]] = {}
    for row in rows:
        cold_s, warm_s, predictors[row] = load_seconds(row, args.size, args.cold)
        loads[row] = (cold_s, warm_s)
    chosen = {}
    for model in (DEFAULT_MODEL, TRAINING_FREE_MODEL):
        p = Predictor(model, size=args.size)  # runtime auto
        chosen[model] = (model, p.runtime, p.precision)
    published = PublishedSGOne().eval()
    pub_inputs = episode_inputs(args.published_size, args.published_size)
    pub_name = f"published SG-One (VGG-16) at {args.published_size}"

    def episode(p: Predictor) -> Callable[[], object]:
        return lambda: (p.set_support(support, mask), p.predict(query))

    @torch.inference_mode()
    def published_episode() -> object:
        return published(*pub_inputs)

    calls: dict[object, Callable[[], object]] = {row: episode(p) for row, p in predictors.items()}
    calls[pub_name] = published_episode
    for fn in calls.values():
        fn()  # warm-up (OpenVINO compiles each new input shape once)
    episodes: dict[object, list[float]] = {name: [] for name in calls}
    queries: dict[object, list[float]] = {row: [] for row in predictors}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            start = clock()
            fn()
            episodes[name].append(1000 * (clock() - start))
            if name in predictors:
                start = clock()
                predictors[name].predict(query)
                queries[name].append(1000 * (clock() - start))
    masks = {row: predictors[row].predict(query).mask >= 1 for row in predictors}
    ep = {name: statistics.median(t) for name, t in episodes.items()}
    qu = {row: statistics.median(t) for row, t in queries.items()}
    pub_ms = ep[pub_name]
    print(f"2048^3 matmul {matmul_gflops():.0f} GFLOP/s after; {args.size}x{args.size}, medians of {args.repeats}, "
          f"{args.clock} clock\n")
    print("| model | runtime | precision | episode ms | query ms | load s cold / warm | mask IoU vs torch | auto |\n"
          "|---|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        cold_s, warm_s = loads[row]
        cold = "-" if cold_s is None else f"{cold_s:.1f}"
        agree = iou(masks[row], masks[(row[0], "torch", "auto")])
        print(f"| {row[0]} | {row[1]} | {row[2]} | {ep[row]:.0f} | {qu[row]:.0f} | {cold} / {warm_s:.1f} | {agree:.3f} "
              f"| {'auto' if chosen[row[0]] == row else ''} |")
    print(f"| {pub_name} | torch | fp32 | {pub_ms:.0f} | - | - | - | |")
    default, free = chosen[DEFAULT_MODEL], chosen[TRAINING_FREE_MODEL]
    free_torch = (TRAINING_FREE_MODEL, "torch", "auto")
    ratios = [
        (f"default episode ({default[1]}, {default[2]}) <= 2.5x the training-free PyTorch episode",
         ep[default] / ep[free_torch], "x", lambda v: v <= 2.5),
        (f"default episode >= 4x faster than the published layout at {args.published_size}",
         pub_ms / ep[default], "x faster", lambda v: v >= 4),
        ("default cached query <= 3.0x the training-free PyTorch cached query",
         qu[default] / qu[free_torch], "x", lambda v: v <= 3.0),
        (f"training-free model >= 1.5x faster under the chosen runtime ({free[1]}, {free[2]}) than PyTorch",
         ep[free_torch] / ep[free], "x faster", lambda v: v >= 1.5),
    ]
    print("\ntargets (issue 24):")
    for text, value, unit, ok in ratios:
        print(f"- {'met' if ok(value) else 'MISSED'}: {text}: {value:.2f}{unit}")
    bf16_row = (DEFAULT_MODEL, "openvino", "bf16")
    if bf16_row in ep:  # what bf16 would give if it passed the accuracy rule
        print(f"- (bf16, not a default until it passes the accuracy rule) default episode "
              f"{ep[bf16_row] / ep[free_torch]:.2f}x the training-free PyTorch episode, "
              f"{pub_ms / ep[bf16_row]:.2f}x faster than published, cached query {qu[bf16_row] / qu[free_torch]:.2f}x")


if __name__ == "__main__":
    main()
