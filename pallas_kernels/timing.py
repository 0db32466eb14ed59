"""Benchmark helpers shared by every op's bench: timing, error and peak numbers of one row.

Kept apart from the top-level `pallas_kernels.bench` so that each op's bench also runs on its own.
`measure` prints each row to stderr as soon as it is timed, so a bench cut off by a time limit still
leaves the rows it finished.
"""
import statistics
import sys
import time
from typing import Callable

import jax
import numpy as np

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


def rel_err(got, want) -> float:
    """||got - want|| / ||want|| over all leaves of two matching pytrees, in float64."""
    pairs = [(np.asarray(g, np.float64), np.asarray(w, np.float64))
             for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want))]
    num = sum(float(np.sum((g - w) ** 2)) for g, w in pairs)
    den = sum(float(np.sum(w ** 2)) for _, w in pairs)
    return float(np.sqrt(num / max(den, 1e-30)))


def measure(row: dict, fn: Callable, args: tuple, *, want=None, err_key: str = "rel_err_vs_xla",
            flops: float | None = None, num_bytes: float | None = None, peak: float | None = None,
            **timing_kwargs) -> dict:
    """Times fn(*args) into `row` (time_ms; tflops with flops; gbps with num_bytes) and returns it.

    With `want`, row[err_key] is rel_err(fn(*args), want) (every timed output is checked).
    peak_frac is of `peak`: GB/s when num_bytes is given (a memory-bound op), else TFLOP/s.
    A peer that cannot run this shape raises: its row then says why in `note` and has no timing.
    timing_kwargs go to `median_seconds`. The finished row is also printed to stderr.
    """
    try:
        if want is not None:
            row[err_key] = rel_err(fn(*args), want)
        seconds = median_seconds(fn, *args, **timing_kwargs)
    except Exception as err:  # noqa: BLE001 - a peer that cannot run this shape says why
        first_line = str(err).splitlines()[0] if str(err) else ""
        row["note"] = f"failed: {type(err).__name__}: {first_line[:120]}"
    else:
        row["time_ms"] = seconds * 1e3
        if flops is not None:
            row["tflops"] = flops / seconds / 1e12
        if num_bytes is not None:
            row["gbps"] = num_bytes / seconds / 1e9
        rate = row.get("gbps") if num_bytes is not None else row.get("tflops")
        row["peak_frac"] = None if peak is None or rate is None else rate / peak
    print("measured: " + "  ".join(f"{k}={_cell(v)}" for k, v in row.items() if v not in (None, "")),
          file=sys.stderr, flush=True)
    return row


def _cell(value) -> str:
    """One table cell: '-' for None, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_rows(rows: list[dict]) -> str:
    """A fixed-width text table of bench rows (union of their keys, in first-seen order)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]

    table = [keys] + [[_cell(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table)
