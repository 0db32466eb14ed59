"""Grouped matmuls as Pallas GPU kernels (Triton lowering): bf16/f32 in, f32 accumulate.

gmm: one program per (row tile, column tile) of the output. A row tile may straddle group
boundaries, so the program loops over the groups owning its rows (precomputed per tile), and for
each group accumulates the tile's product with that group's weights, loading only that group's rows
(masked loads give 0 elsewhere). Every output tile is written exactly once, so there are no races;
rows owned by no group come out 0.

tgmm: one program per (group, K tile, N tile) of the [E, K, N] output; it walks the group's rows in
steps of tm. Empty groups write zeros.

Tile sizes must be powers of two (Triton); array sizes need not be multiples of them (edges masked).
"""
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.backend import dot_precision
from pallas_kernels.gmm import metadata


def _contract(a: jax.Array, b: jax.Array, a_dim: int, b_dim: int) -> jax.Array:
    """2-D dot contracting a's dim a_dim with b's dim b_dim, f32 result (IEEE for f32 inputs, not TF32)."""
    return jax.lax.dot_general(a, b, (((a_dim,), (b_dim,)), ((), ())), precision=dot_precision(a, b),
                               preferred_element_type=jnp.float32)


def _gmm_kernel(first_ref, last_ref, starts_ref, ends_ref, lhs_ref, rhs_ref, out_ref, *,
                m: int, k: int, n: int, tm: int, tk: int, tn: int, transpose_rhs: bool):
    tile_m, tile_n = pl.program_id(0), pl.program_id(1)
    rows = tile_m * tm + jnp.arange(tm)
    cols = tile_n * tn + jnp.arange(tn)
    col_ok = cols < n
    row_slice, col_slice = pl.ds(tile_m * tm, tm), pl.ds(tile_n * tn, tn)

    def one_group(g, acc):
        row_in_group = (rows >= starts_ref[g]) & (rows < ends_ref[g])

        def one_k_step(step, acc):
            ks = step * tk + jnp.arange(tk)
            k_ok = ks < k
            a = pltriton.load(lhs_ref.at[row_slice, pl.ds(step * tk, tk)],
                              mask=row_in_group[:, None] & k_ok[None, :], other=0)
            if transpose_rhs:  # rhs[g] is [N, K]
                b = pltriton.load(rhs_ref.at[g, col_slice, pl.ds(step * tk, tk)],
                                  mask=col_ok[:, None] & k_ok[None, :], other=0)
                return acc + _contract(a, b, 1, 1)
            b = pltriton.load(rhs_ref.at[g, pl.ds(step * tk, tk), col_slice],
                              mask=k_ok[:, None] & col_ok[None, :], other=0)
            return acc + _contract(a, b, 1, 0)

        return jax.lax.fori_loop(0, pl.cdiv(k, tk), one_k_step, acc)

    acc = jax.lax.fori_loop(first_ref[tile_m], last_ref[tile_m] + 1, one_group,
                            jnp.zeros((tm, tn), jnp.float32))
    pltriton.store(out_ref.at[row_slice, col_slice], acc.astype(out_ref.dtype),
                   mask=(rows < m)[:, None] & col_ok[None, :])


def gmm_gpu(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *, tiling: tuple[int, int, int],
            transpose_rhs: bool, out_dtype: jnp.dtype, num_warps: int = 4, num_stages: int = 3,
            interpret: bool = False) -> jax.Array:
    """Grouped matmul [M, K] x [E, K, N] ([E, N, K] when transpose_rhs) -> [M, N] out_dtype.

    Args:
      lhs, rhs: same float dtype; group_sizes: [E] int32, rows sorted by group.
      tiling: (tm, tk, tn) powers of two (>= 16 for the tensor cores).
      num_warps, num_stages: Triton launch parameters.
      interpret: run the kernel in the Pallas interpreter (CPU tests).
    """
    m, k = lhs.shape
    n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
    tm, tk, tn = tiling
    first, last = metadata.tile_group_range(group_sizes, m, tm)
    starts, ends = metadata.group_bounds(group_sizes, m)
    kernel = functools.partial(_gmm_kernel, m=m, k=k, n=n, tm=tm, tk=tk, tn=tn,
                               transpose_rhs=transpose_rhs)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((m, n), out_dtype),
        grid=(pl.cdiv(m, tm), pl.cdiv(n, tn)),
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name="gmm_gpu",
    )(first, last, starts, ends, lhs, rhs)


def _tgmm_kernel(starts_ref, ends_ref, lhs_ref, rhs_ref, out_ref, *,
                 k: int, n: int, tm: int, tk: int, tn: int):
    group, tile_k, tile_n = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    start, end = starts_ref[group], ends_ref[group]
    ks = tile_k * tk + jnp.arange(tk)
    cols = tile_n * tn + jnp.arange(tn)
    k_ok, col_ok = ks < k, cols < n

    def one_row_step(step, acc):
        first_row = start + step * tm
        rows = first_row + jnp.arange(tm)
        row_ok = rows < end
        a = pltriton.load(lhs_ref.at[pl.ds(first_row, tm), pl.ds(tile_k * tk, tk)],
                          mask=row_ok[:, None] & k_ok[None, :], other=0)
        b = pltriton.load(rhs_ref.at[pl.ds(first_row, tm), pl.ds(tile_n * tn, tn)],
                          mask=row_ok[:, None] & col_ok[None, :], other=0)
        return acc + _contract(a, b, 0, 0)

    num_steps = pl.cdiv(end - start, tm)
    acc = jax.lax.fori_loop(0, num_steps, one_row_step, jnp.zeros((tk, tn), jnp.float32))
    pltriton.store(out_ref.at[group, pl.ds(tile_k * tk, tk), pl.ds(tile_n * tn, tn)],
                   acc.astype(out_ref.dtype), mask=k_ok[:, None] & col_ok[None, :])


def tgmm_gpu(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *,
             tiling: tuple[int, int, int], out_dtype: jnp.dtype, num_warps: int = 4,
             num_stages: int = 3, interpret: bool = False) -> jax.Array:
    """Per-group lhs^T @ rhs: [M, K], [M, N] -> [E, K, N] out_dtype (zeros for empty groups).

    Args: as gmm_gpu; tiling = (tm, tk, tn), tm being the row step of the reduction.
    """
    m, k = lhs.shape
    n = rhs.shape[1]
    num_groups = group_sizes.shape[0]
    tm, tk, tn = tiling
    starts, ends = metadata.group_bounds(group_sizes, m)
    kernel = functools.partial(_tgmm_kernel, k=k, n=n, tm=tm, tk=tk, tn=tn)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((num_groups, k, n), out_dtype),
        grid=(num_groups, pl.cdiv(k, tk), pl.cdiv(n, tn)),
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name="tgmm_gpu",
    )(starts, ends, lhs, rhs)
