"""Timing helper shared by the benchmarks: warm up (compile), then the median of repeated runs."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import jax


def median_seconds(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds, blocking on its outputs each time."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)
