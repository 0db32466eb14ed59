"""SSD scan benchmark: our Pallas kernel vs our XLA path vs the token-by-token scan (bench rows).

Rows {op, size, impl, time_ms, tflops, peak_frac, rel_err_vs_ref, note}; impl:
  "pallas"      ssd_scan(impl="auto") on a GPU/TPU (the running backend's kernel); n/a on CPU.
  "pallas-xla"  ssd_scan(impl="xla"), the chunked jnp path.
  "sequential"  reference.ssd_sequential, a lax.scan over tokens (also the rel_err reference).
Every row has resets (a packed segment start every T/4 tokens) and an initial state.
FLOPs (the chunked algorithm's matmuls, per head and chunk of L tokens): 2 L^2 N (scores) +
2 L^2 P (intra-chunk output) + 4 L P N (incoming state's share, chunk state), i.e. the kernel's work;
the sequential scan is timed against the same count. peak_frac: of the dense peak for the dtype.

    python -m pallas_kernels.ssd.bench [--sizes=nano_4k,...] [--dtype=bfloat16]

Not wired into `python -m pallas_kernels.bench` (that file belongs to another change); its
`run(sizes, dtype)` follows the same contract, so adding an OPS entry is all it takes.
"""
import argparse
import dataclasses

import jax
import jax.numpy as jnp

from pallas_kernels import device_peaks, timing
from pallas_kernels.ssd import ops, reference


@dataclasses.dataclass(frozen=True)
class SsdSize:
    """One scan: [batch, seq, heads, head_dim] x, groups x state_size b/c, chunk tokens per chunk."""

    batch: int
    seq: int
    heads: int = 64
    head_dim: int = 64
    groups: int = 8
    state_size: int = 128
    chunk: int = 128

    def __str__(self):
        return (f"B={self.batch} T={self.seq} H={self.heads} P={self.head_dim} G={self.groups} "
                f"N={self.state_size} L={self.chunk}")

    def flops(self) -> float:
        chunks = -(-self.seq // self.chunk)
        length, p, n = self.chunk, self.head_dim, self.state_size
        return self.batch * self.heads * chunks * 2.0 * length * (length * (n + p) + 2 * p * n)


# Mamba-2 layers of Nemotron-H-like shapes (64 heads of 64, 8 groups, state 128, chunk 128).
SIZES = {
    "nano_4k": SsdSize(1, 4096),
    "nano_16k": SsdSize(1, 16384),
    "nano_b8_4k": SsdSize(8, 4096),
    "cpu_small": SsdSize(1, 1024, 8, 32, 2, 32, 64),
    "cpu_tiny": SsdSize(1, 64, 2, 16, 1, 16, 16),
}
ACCELERATOR_SIZES = ("nano_4k", "nano_16k", "nano_b8_4k")
CPU_SIZES = ("cpu_small",)


def _inputs(size: SsdSize, dtype):
    keys = jax.random.split(jax.random.key(0), 6)
    shape = (size.batch, size.seq)
    x = jax.random.normal(keys[0], (*shape, size.heads, size.head_dim)).astype(dtype)
    dt = jax.random.uniform(keys[1], (*shape, size.heads), minval=0.001, maxval=0.1)
    a = -jax.random.uniform(keys[2], (size.heads,), minval=0.5, maxval=4.0)
    b = jax.random.normal(keys[3], (*shape, size.groups, size.state_size)).astype(dtype)
    c = jax.random.normal(keys[4], b.shape).astype(dtype)
    starts = jnp.broadcast_to(jnp.arange(size.seq) % max(1, size.seq // 4) == 0, shape)
    h0 = jax.random.normal(keys[5], (size.batch, size.heads, size.head_dim, size.state_size))
    return x, dt, a, b, c, starts, h0


def _candidates(size: SsdSize, backend: str):
    """(impl, fn(x, dt, a, b, c, starts, h0) -> (y, state) or None, note)."""
    def scan(impl):
        return lambda x, dt, a, b, c, s, h0: ops.ssd_scan(x, dt, a, b, c, s, chunk_size=size.chunk,
                                                         initial_state=h0, impl=impl)

    supported = backend in ("gpu", "tpu") and ops.kernel_supports(backend, min(size.chunk, size.seq),
                                                                  size.head_dim, size.state_size)
    note = "" if supported else (f"n/a on {backend}" if backend not in ("gpu", "tpu")
                                 else "n/a: shape not supported by the kernel")
    return [("pallas", scan("auto") if supported else None, note),
            ("pallas-xla", scan("xla"), ""),
            ("sequential", jax.jit(reference.ssd_sequential), "the rel_err reference")]


def run(sizes=None, dtype: str = "bfloat16") -> list[dict]:
    """SSD scan rows for each size (names from SIZES or SsdSize values) and implementation."""
    backend = jax.default_backend()
    if sizes is None:
        sizes = ACCELERATOR_SIZES if backend in ("gpu", "tpu") else CPU_SIZES
    peak = device_peaks.peak_tflops(dtype)
    rows = []
    for name, size in [(s, SIZES[s]) if isinstance(s, str) else (str(s), s) for s in sizes]:
        args = _inputs(size, dtype)
        candidates = _candidates(size, backend)
        want = candidates[-1][1](*args)
        for impl, fn, note in candidates:
            row = dict(op="ssd scan", size=f"{name} {size}", impl=impl, time_ms=None, tflops=None,
                       peak_frac=None, rel_err_vs_ref=None, note=note)
            rows.append(row if fn is None else
                        timing.measure(row, fn, args, want=want, err_key="rel_err_vs_ref",
                                       flops=size.flops(), peak=peak))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--sizes", default=None, help=f"comma-separated names from {','.join(SIZES)}")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); dtype {args.dtype}")
    print(timing.format_rows(run(None if args.sizes is None else args.sizes.split(","), args.dtype)))


if __name__ == "__main__":
    main()
