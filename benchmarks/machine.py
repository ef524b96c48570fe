"""Shared by the benchmark scripts: how loaded the machine is while they measure."""
from __future__ import annotations

import statistics
import time


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Median rate of an n^3 fp32 matmul in GFLOP/s (~200 on an idle 2-core reference machine)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9
