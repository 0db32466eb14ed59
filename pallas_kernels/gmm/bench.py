"""Grouped-matmul benchmark: our Pallas kernel vs jax's bundled kernel vs XLA's ragged_dot.

`run()` returns one row per (op, size, impl): median time, TFLOP/s, fraction of the device's dense
peak, and the relative error against the XLA result (every timed output is checked). On CPU only
XLA runs (the kernels' rows say "n/a on cpu"). Bundled peers: on GPU the Mosaic-GPU
`ragged_dot_mgpu` / `transposed_ragged_dot_mgpu` (Hopper only), on TPU megablox `gmm` / `tgmm`.

    python -m pallas_kernels.gmm.bench [--dtype bfloat16] [--sizes nano30b_up,nano30b_down]
    python -m pallas_kernels.gmm.bench --tune   # sweep our GPU kernel's tiles on the sizes
"""
import argparse
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import device_peaks, timing
from pallas_kernels.gmm import gpu, ops

# name -> (M rows = tokens * top_k, K, N, E experts).
SIZES = {
    # Nemotron-3-Nano-30B MoE layer, 4096 tokens x top-6, squared-ReLU experts (non-gated).
    "nano30b_up": (4096 * 6, 2688, 1856, 128),
    "nano30b_down": (4096 * 6, 1856, 2688, 128),
    "mid_16experts": (8192, 2048, 2048, 16),
    "cpu_small": (2048, 256, 256, 8),
}
ACCELERATOR_SIZES = ("nano30b_up", "nano30b_down", "mid_16experts")
CPU_SIZES = ("cpu_small",)


def _group_sizes(m: int, num_groups: int, seed: int = 0) -> jax.Array:
    """Token counts of a uniform random router: multinomial(m, 1/E), int32."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.multinomial(m, np.ones(num_groups) / num_groups), jnp.int32)


OPS = ("gmm", "gmm_transposed_rhs", "tgmm", "gmm_fwd_bwd")
BUNDLED_OPS = ("gmm", "gmm_transposed_rhs", "tgmm")  # jax ships no fused fwd+bwd peer


def _bundled(op: str, backend: str, dtype):
    """jax's bundled kernel for op on backend as fn(lhs, rhs_or_dout, group_sizes), or None."""
    if backend == "gpu":
        from jax.experimental.pallas.ops.gpu import ragged_dot_mgpu, transposed_ragged_dot_mgpu

        def block(dim):
            return 128 if dim % 128 == 0 else 64

        if op in ("gmm", "gmm_transposed_rhs"):
            def fn(lhs, rhs, gs):
                n = rhs.shape[1] if op == "gmm_transposed_rhs" else rhs.shape[2]
                return ragged_dot_mgpu.ragged_dot(
                    lhs, rhs, group_sizes=gs, block_m=128, block_n=block(n), block_k=64,
                    max_concurrent_steps=4, grid_block_n=1,
                    transpose_rhs=op == "gmm_transposed_rhs")
            return jax.jit(fn)
        if op == "tgmm":
            def fn(lhs, dout, gs):
                return transposed_ragged_dot_mgpu.transposed_ragged_dot(
                    lhs, dout, group_sizes=gs, block_m=block(lhs.shape[1]),
                    block_n=block(dout.shape[1]), block_k=64, max_concurrent_steps=2,
                    grid_block_n=1)
            return jax.jit(fn)
    if backend == "tpu":
        from jax.experimental.pallas.ops.tpu.megablox import gmm as megablox
        if op in ("gmm", "gmm_transposed_rhs"):
            return jax.jit(functools.partial(megablox.gmm, preferred_element_type=dtype,
                                             transpose_rhs=op == "gmm_transposed_rhs"))
        if op == "tgmm":  # megablox wants lhs as [K, M]: the transpose is timed too
            return jax.jit(lambda lhs, dout, gs: megablox.tgmm(
                lhs.T, dout, gs, preferred_element_type=dtype))
    return None


def _operands(op: str, m: int, k: int, n: int, e: int, dtype) -> tuple:
    keys = jax.random.split(jax.random.key(0), 2)
    lhs = jax.random.normal(keys[0], (m, k), jnp.float32).astype(dtype)
    if op == "tgmm":
        second = jax.random.normal(keys[1], (m, n), jnp.float32).astype(dtype)
    else:
        shape = (e, n, k) if op == "gmm_transposed_rhs" else (e, k, n)
        second = (jax.random.normal(keys[1], shape, jnp.float32) / np.sqrt(k)).astype(dtype)
    return lhs, second, _group_sizes(m, e)


def _ours(op: str, impl: str, tiling=None):
    if op == "tgmm":
        return lambda a, b, gs: ops.tgmm(a, b, gs, impl=impl, tiling=tiling)
    if op == "gmm_fwd_bwd":
        loss = lambda a, b, gs: jnp.sum(ops.gmm(a, b, gs, impl=impl, tiling=tiling)
                                        .astype(jnp.float32))
        return jax.jit(jax.grad(loss, argnums=(0, 1)))
    return lambda a, b, gs: ops.gmm(a, b, gs, impl=impl, tiling=tiling,
                                    transpose_rhs=op == "gmm_transposed_rhs")


def run(sizes=None, dtype: str = "bfloat16") -> list[dict]:
    """Benchmark rows for every op and size.

    Args:
      sizes: names from SIZES or (M, K, N, E) tuples; default: the nano30b shapes on an
        accelerator, a small shape on CPU.
      dtype: input dtype name ("bfloat16" or "float32").
    Returns:
      dicts with op, size, impl, time_ms, tflops, peak_frac, rel_err_vs_xla, note.
    """
    backend = jax.default_backend()
    if sizes is None:
        sizes = ACCELERATOR_SIZES if backend in ("gpu", "tpu") else CPU_SIZES
    peak = device_peaks.peak_tflops(dtype)
    rows = []
    for size in sizes:
        name, (m, k, n, e) = (size, SIZES[size]) if isinstance(size, str) else (str(size), size)
        for op in OPS:
            operands = _operands(op, m, k, n, e, jnp.dtype(dtype))
            flops = 2 * m * k * n * (3 if op == "gmm_fwd_bwd" else 1)
            xla_fn = jax.jit(_ours(op, "xla"))
            want = xla_fn(*operands)
            candidates = [("xla (ragged_dot)", xla_fn)]
            if backend in ("gpu", "tpu"):
                candidates.append((f"ours ({backend})", jax.jit(_ours(op, backend))))
                bundled = _bundled(op, backend, jnp.dtype(dtype))
                if bundled is not None:
                    candidates.append(("bundled jax kernel", bundled))
            else:
                candidates.append(("ours (pallas)", None))
                if op in BUNDLED_OPS:
                    candidates.append(("bundled jax kernel", None))
            for impl, fn in candidates:
                row = dict(op=op, size=f"{name} M={m} K={k} N={n} E={e}", impl=impl,
                           time_ms=None, tflops=None, peak_frac=None, rel_err_vs_xla=None,
                           note="")
                if fn is None:
                    row["note"] = f"n/a on {backend}"
                else:
                    timing.measure(row, fn, operands, want=want, flops=flops, peak=peak)
                rows.append(row)
    return rows


def tune(sizes=ACCELERATOR_SIZES, dtype: str = "bfloat16") -> list[dict]:
    """Sweeps our GPU kernel's (tm, tk, tn, num_warps, num_stages) for gmm and tgmm."""
    if jax.default_backend() != "gpu":
        raise SystemExit(f"--tune times the GPU kernel; the backend is {jax.default_backend()}")
    rows = []
    for size in sizes:
        m, k, n, e = SIZES[size]
        for op in ("gmm", "tgmm"):
            lhs, second, gs = _operands(op, m, k, n, e, jnp.dtype(dtype))
            for tm, tk, tn, warps, stages in itertools.product(
                    (64, 128), (32, 64), (64, 128, 256), (4, 8), (3, 4)):
                if op == "gmm":
                    fn = jax.jit(functools.partial(
                        gpu.gmm_gpu, tiling=(tm, tk, tn), transpose_rhs=False,
                        out_dtype=jnp.dtype(dtype), num_warps=warps, num_stages=stages))
                else:
                    fn = jax.jit(functools.partial(
                        gpu.tgmm_gpu, tiling=(tm, tk, tn), out_dtype=jnp.dtype(dtype),
                        num_warps=warps, num_stages=stages))
                row = dict(op=op, size=size, tiling=(tm, tk, tn), warps=warps, stages=stages)
                try:
                    row["time_ms"] = timing.median_seconds(fn, lhs, second, gs, samples=3) * 1e3
                except Exception as err:
                    row["note"] = f"failed: {type(err).__name__}: {str(err)[:80]}"
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--sizes", default=None, help="comma-separated names from SIZES")
    parser.add_argument("--tune", action="store_true")
    args = parser.parse_args()
    sizes = None if args.sizes is None else args.sizes.split(",")
    if args.tune:
        print(timing.format_rows(tune(sizes or ACCELERATOR_SIZES, args.dtype)))
    else:
        print(timing.format_rows(run(sizes, args.dtype)))


if __name__ == "__main__":
    main()
