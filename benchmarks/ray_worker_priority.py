"""How long two Ray actors take to import torch when the machine is busy, with the workers at Ray's
default priority (nice 15) and at the priority `sgone label --engine ray` starts its cluster with (0).

The busy machine is simulated: one process per core spinning (numpy matmuls) at normal priority, as a
training job or another user's work would. Each setting starts its own local cluster (RAY_worker_niceness
set for it), creates 2 actors and times `import torch` inside them.

    python benchmarks/ray_worker_priority.py            # busy: one spinner per core
    python benchmarks/ray_worker_priority.py --spinners 0
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def spin(stop) -> None:
    import numpy as np

    a = np.random.default_rng(0).random((512, 512))
    while not stop.is_set():
        a @ a


def actor_imports(niceness: str, actors: int) -> tuple[float, list[float]]:
    """Start a local cluster with workers at `niceness` -> (seconds until every actor imported torch, per actor)."""
    import logging

    import ray

    os.environ["RAY_worker_niceness"] = niceness
    ray.init(address="local", num_cpus=actors, include_dashboard=False, logging_level=logging.WARNING)
    try:
        @ray.remote
        class Importer:
            def run(self) -> float:
                start = time.perf_counter()
                import torch  # noqa: F401

                return time.perf_counter() - start

        start = time.perf_counter()
        each = ray.get([Importer.remote().run.remote() for _ in range(actors)])
        return time.perf_counter() - start, each
    finally:
        ray.shutdown()
        os.environ.pop("RAY_worker_niceness", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spinners", type=int, default=os.cpu_count(), help="busy processes (default: one per core)")
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster
    stop = mp.Event()
    spinners = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.spinners)]
    for p in spinners:
        p.start()
    try:
        print(f"{os.cpu_count()} CPUs, {args.spinners} busy process(es) at nice 0, {args.actors} actors")
        print("| worker nice | actors created + torch imported, s | torch import per actor, s |")
        print("|---:|---:|---|")
        for niceness in ("15", "0"):
            total, each = actor_imports(niceness, args.actors)
            print(f"| {niceness} | {total:.1f} | {', '.join(f'{t:.1f}' for t in each)} |", flush=True)
    finally:
        stop.set()
        for p in spinners:
            p.join(timeout=5)


if __name__ == "__main__":
    main()
