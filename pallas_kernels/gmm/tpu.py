"""Grouped matmuls as Pallas Mosaic-TPU kernels: bf16/f32 in, f32 VMEM accumulator.

Both kernels walk a work list of (group, row tile) items (see `metadata.work_list`), passed to the
kernel as scalar-prefetch operands so that the BlockSpec index maps can pick the blocks of each item.

gmm grid: (N tiles, work items, K tiles). An item accumulates its row tile times its group's weight
tile over K and stores only its group's rows into the output tile; the other rows of a tile shared
by two groups are written by the neighbouring item, which the work-list order makes consecutive, so
the tile stays in VMEM between the visits. A pseudo-group covers the rows past sum(group_sizes) and
writes zeros there.

tgmm grid: (K tiles, N tiles, work items). The [tk, tn] accumulator is zeroed when the group changes
and stored when the next item belongs to another group; empty groups get one item that stores zeros.

Block constraints: tm a multiple of 8 (16 for bf16), tk and tn multiples of 128 or equal to the
full dimension. Dimensions need not be multiples of the tiles; the K remainder is masked.
"""
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.backend import dot_precision
from pallas_kernels.gmm import metadata


def _mask_k_remainder(x: jax.Array, k_step: jax.Array, *, k: int, tk: int, axis: int) -> jax.Array:
    """Zeroes the entries of a K tile past the true K (the edge block holds undefined data)."""
    if k % tk == 0:
        return x
    k_index = k_step * tk + jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
    return jnp.where(k_index < k, x, jnp.zeros_like(x))


def _rows_of_group(starts_ref, ends_ref, group: jax.Array, tile: jax.Array, shape: tuple[int, int],
                   tm: int) -> jax.Array:
    """[tm, c] bool: which rows of row tile `tile` belong to `group`."""
    rows = tile * tm + jax.lax.broadcasted_iota(jnp.int32, shape, 0)
    return (rows >= starts_ref[group]) & (rows < ends_ref[group])


def _gmm_kernel(starts_ref, ends_ref, group_ids_ref, tile_ids_ref, lhs_ref, rhs_ref, out_ref,
                acc_ref, *, num_groups: int, k: int, tm: int, tk: int, transpose_rhs: bool):
    item, k_step = pl.program_id(1), pl.program_id(2)
    group = group_ids_ref[item]

    @pl.when(k_step == 0)
    def _zero():
        acc_ref[...] = jnp.zeros_like(acc_ref)

    @pl.when(group < num_groups)  # the tail pseudo-group only writes zeros
    def _accumulate():
        a = _mask_k_remainder(lhs_ref[...], k_step, k=k, tk=tk, axis=1)
        b = _mask_k_remainder(rhs_ref[...], k_step, k=k, tk=tk, axis=1 if transpose_rhs else 0)
        dims = (((1,), (1 if transpose_rhs else 0,)), ((), ()))
        acc_ref[...] += jax.lax.dot_general(a, b, dims, precision=dot_precision(a, b),
                                            preferred_element_type=jnp.float32)

    @pl.when(k_step == pl.num_programs(2) - 1)
    def _store():
        mine = _rows_of_group(starts_ref, ends_ref, group, tile_ids_ref[item], acc_ref.shape, tm)
        out_ref[...] = jnp.where(mine, acc_ref[...], out_ref[...].astype(jnp.float32)
                                 ).astype(out_ref.dtype)


def gmm_tpu(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *, tiling: tuple[int, int, int],
            transpose_rhs: bool, out_dtype: jnp.dtype,
            interpret: bool | pltpu.InterpretParams = False) -> jax.Array:
    """Grouped matmul [M, K] x [E, K, N] ([E, N, K] when transpose_rhs) -> [M, N] out_dtype.

    Args:
      lhs, rhs: same float dtype; group_sizes: [E] int32, rows sorted by group.
      tiling: (tm, tk, tn), see the module docstring for the block constraints.
      interpret: False on a TPU, or pltpu.InterpretParams() to simulate the kernel on CPU.
    """
    m, k = lhs.shape
    num_groups = rhs.shape[0]
    n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
    tm, tk, tn = tiling
    work = metadata.work_list(group_sizes, m, tm, visit_empty=False, cover_tail=True)

    def lhs_map(n_i, item, k_i, starts, ends, group_ids, tile_ids):
        return tile_ids[item], k_i

    def rhs_map(n_i, item, k_i, starts, ends, group_ids, tile_ids):
        group = jnp.minimum(group_ids[item], num_groups - 1)
        return (group, n_i, k_i) if transpose_rhs else (group, k_i, n_i)

    def out_map(n_i, item, k_i, starts, ends, group_ids, tile_ids):
        return tile_ids[item], n_i

    rhs_block = (None, tn, tk) if transpose_rhs else (None, tk, tn)
    kernel = functools.partial(_gmm_kernel, num_groups=num_groups, k=k, tm=tm, tk=tk,
                               transpose_rhs=transpose_rhs)
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=4,
        grid=(pl.cdiv(n, tn), work.num_items, pl.cdiv(k, tk)),
        in_specs=[pl.BlockSpec((tm, tk), lhs_map), pl.BlockSpec(rhs_block, rhs_map)],
        out_specs=pl.BlockSpec((tm, tn), out_map),
        scratch_shapes=[pltpu.VMEM((tm, tn), jnp.float32)],
    )
    itemsize = jnp.dtype(lhs.dtype).itemsize
    cost = pl.CostEstimate(flops=2 * m * k * n, transcendentals=0,
                           bytes_accessed=(m * k * pl.cdiv(n, tn) + num_groups * k * n) * itemsize
                           + m * n * jnp.dtype(out_dtype).itemsize)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((m, n), out_dtype),
        grid_spec=grid_spec,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "arbitrary", "arbitrary")),
        interpret=interpret,
        cost_estimate=cost,
        name="gmm_tpu",
    )(work.starts, work.ends, work.group_ids, work.tile_ids, lhs, rhs)


def _tgmm_kernel(starts_ref, ends_ref, group_ids_ref, tile_ids_ref, lhs_ref, rhs_ref, out_ref,
                 acc_ref, *, tm: int):
    item, num_items = pl.program_id(2), pl.num_programs(2)
    group = group_ids_ref[item]
    previous_group = group_ids_ref[jnp.maximum(item - 1, 0)]
    next_group = group_ids_ref[jnp.minimum(item + 1, num_items - 1)]

    @pl.when((item == 0) | (group != previous_group))
    def _zero():
        acc_ref[...] = jnp.zeros_like(acc_ref)

    @pl.when(ends_ref[group] > starts_ref[group])
    def _accumulate():
        tile = tile_ids_ref[item]
        lhs_tile, rhs_tile = lhs_ref[...], rhs_ref[...]
        a = jnp.where(_rows_of_group(starts_ref, ends_ref, group, tile, lhs_tile.shape, tm),
                      lhs_tile, jnp.zeros_like(lhs_tile))
        b = jnp.where(_rows_of_group(starts_ref, ends_ref, group, tile, rhs_tile.shape, tm),
                      rhs_tile, jnp.zeros_like(rhs_tile))
        acc_ref[...] += jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=dot_precision(a, b),
                                            preferred_element_type=jnp.float32)

    @pl.when((item == num_items - 1) | (group != next_group))
    def _store():
        out_ref[...] = acc_ref[...].astype(out_ref.dtype)


def tgmm_tpu(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *,
             tiling: tuple[int, int, int], out_dtype: jnp.dtype,
             interpret: bool | pltpu.InterpretParams = False) -> jax.Array:
    """Per-group lhs^T @ rhs: [M, K], [M, N] -> [E, K, N] out_dtype (zeros for empty groups).

    Args: as gmm_tpu; tiling = (tm, tk, tn), tm being the row step of the reduction.
    """
    m, k = lhs.shape
    n = rhs.shape[1]
    num_groups = group_sizes.shape[0]
    tm, tk, tn = tiling
    work = metadata.work_list(group_sizes, m, tm, visit_empty=True, cover_tail=False)

    def lhs_map(k_i, n_i, item, starts, ends, group_ids, tile_ids):
        return tile_ids[item], k_i

    def rhs_map(k_i, n_i, item, starts, ends, group_ids, tile_ids):
        return tile_ids[item], n_i

    def out_map(k_i, n_i, item, starts, ends, group_ids, tile_ids):
        return group_ids[item], k_i, n_i

    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=4,
        grid=(pl.cdiv(k, tk), pl.cdiv(n, tn), work.num_items),
        in_specs=[pl.BlockSpec((tm, tk), lhs_map), pl.BlockSpec((tm, tn), rhs_map)],
        out_specs=pl.BlockSpec((None, tk, tn), out_map),
        scratch_shapes=[pltpu.VMEM((tk, tn), jnp.float32)],
    )
    itemsize = jnp.dtype(lhs.dtype).itemsize
    cost = pl.CostEstimate(flops=2 * m * k * n, transcendentals=0,
                           bytes_accessed=(m * k * pl.cdiv(n, tn) + m * n * pl.cdiv(k, tk))
                           * itemsize + num_groups * k * n * jnp.dtype(out_dtype).itemsize)
    return pl.pallas_call(
        functools.partial(_tgmm_kernel, tm=tm),
        out_shape=jax.ShapeDtypeStruct((num_groups, k, n), out_dtype),
        grid_spec=grid_spec,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary")),
        interpret=interpret,
        cost_estimate=cost,
        name="tgmm_tpu",
    )(work.starts, work.ends, work.group_ids, work.tile_ids, lhs, rhs)
