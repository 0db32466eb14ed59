"""Benchmark helpers: wall-clock timing of jitted calls and per-device peak numbers.

Used by the gmm and routing benches (kept here, not in the top-level bench, so that each op's bench
runs on its own too).
"""
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp

# Dense peak matrix throughput per device in TFLOP/s, by input dtype (vendor data sheets; the
# H100/H200 numbers are the SXM parts without sparsity; float32 is the non-tensor-core FP32 rate).
_PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float32": 67.0},
    "H100": {"bfloat16": 989.0, "float32": 67.0},
    "TPU v5p": {"bfloat16": 459.0},
    "TPU v5 lite": {"bfloat16": 197.0},
    "TPU v6 lite": {"bfloat16": 918.0},
    "TPU v6e": {"bfloat16": 918.0},
    "TPU v4": {"bfloat16": 275.0},
}
# Peak HBM bandwidth in GB/s.
_PEAK_GBPS = {
    "H200": 4800.0, "H100": 3350.0, "TPU v5p": 2765.0, "TPU v5 lite": 819.0,
    "TPU v6 lite": 1640.0, "TPU v6e": 1640.0, "TPU v4": 1228.0,
}


def _lookup(table: dict, device_kind: str):
    for name, value in table.items():
        if name.lower() in device_kind.lower():
            return value
    return None


def peak_tflops(dtype: str, device=None) -> float | None:
    """Dense peak TFLOP/s of `device` (default: the first) for `dtype`, None when unknown."""
    kind = (device or jax.devices()[0]).device_kind
    return (_lookup(_PEAK_TFLOPS, kind) or {}).get(jnp.dtype(dtype).name)


def peak_gbps(device=None) -> float | None:
    """Peak memory bandwidth of `device` in GB/s, None when unknown."""
    return _lookup(_PEAK_GBPS, (device or jax.devices()[0]).device_kind)


def median_seconds(fn: Callable, *args, warmup: int = 2, samples: int = 7,
                   calls_per_sample: int = 3) -> float:
    """Median wall time of one call of fn(*args), in seconds.

    Each sample runs calls_per_sample calls back to back and blocks on the last result, so that
    host dispatch overlaps device work; the sample time is divided by calls_per_sample.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(calls_per_sample):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / calls_per_sample)
    return statistics.median(times)


def format_rows(rows: list[dict]) -> str:
    """A fixed-width text table of bench rows (union of their keys, in first-seen order)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    table = [keys] + [[cell(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table)
