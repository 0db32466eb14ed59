"""The chunked SSD scan as one Pallas TPU kernel (Mosaic).

Grid (B, H, K): one program per (batch row, head, chunk), the chunk axis last and "arbitrary"
(sequential), so the running [P, N] state lives in a float32 VMEM scratch across the chunks of a
head: loaded from initial_state at chunk 0, advanced by `chunk_math.chunk_step` (intra-chunk
[L, L] scores and output, the incoming state's share, the chunk's own state contribution), and
written as the final state at chunk K - 1 (that output block's index does not change along K, so
it stays resident and is written back once). Each program reads its chunk of x, b, c (b/c of the
head's group h // (H // G), by index map, never repeated) and writes its chunk of y: one pass over
the activations, no per-chunk states in HBM.

Layout: x/y [B, H, K, L, P], b/c [B, G, K, L, N], coefficient columns [B, H, K, L, 1] and rows
[B, H, K, 1, L]; each block covers the last two dims whole, so every block shape is legal for any
L, P, N (ops.py asks for L % 128 == 0 anyway, a lane-width row vector; see ops.kernel_supports).
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.ssd import chunk_math

_NUM_VECTORS = len(chunk_math.ChunkVectors._fields)


def _ssd_kernel(x_ref, b_ref, c_ref, *refs, num_chunks: int):
    vec_refs, (init_ref, y_ref, final_ref, state_scr) = refs[:_NUM_VECTORS], refs[_NUM_VECTORS:]
    chunk = pl.program_id(2)

    @pl.when(chunk == 0)
    def _init():
        state_scr[...] = init_ref[...]

    vec = chunk_math.ChunkVectors(*(ref[...] for ref in vec_refs))
    y, state = chunk_math.chunk_step(x_ref[...], b_ref[...], c_ref[...], vec, state_scr[...])
    y_ref[...] = y.astype(y_ref.dtype)
    state_scr[...] = state

    @pl.when(chunk == num_chunks - 1)
    def _write():
        final_ref[...] = state


def _chunk_spec(array, index_map):
    """BlockSpec of one chunk's [.., last two dims] tile of a [B, heads, K, d1, d2] array."""
    return pl.BlockSpec((None, None, None, *array.shape[3:]), index_map)


def ssd_tpu(x, b, c, vec: chunk_math.ChunkVectors, initial_state, *, interpret=False):
    """Same contract as xla.ssd_xla, with y in x's dtype."""
    bsz, h, k, size, p = x.shape
    n = b.shape[-1]
    per_group = h // b.shape[1]
    head_map = lambda b_, h_, k_: (b_, h_, k_, 0, 0)
    group_map = lambda b_, h_, k_: (b_, lax.div(h_, per_group), k_, 0, 0)
    state_spec = pl.BlockSpec((None, None, p, n), lambda b_, h_, k_: (b_, h_, 0, 0))
    return pl.pallas_call(
        functools.partial(_ssd_kernel, num_chunks=k),
        grid=(bsz, h, k),
        in_specs=[_chunk_spec(x, head_map), _chunk_spec(b, group_map), _chunk_spec(c, group_map),
                  *(_chunk_spec(v, head_map) for v in vec), state_spec],
        out_specs=[_chunk_spec(x, head_map), state_spec],
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype),
                   jax.ShapeDtypeStruct((bsz, h, p, n), jnp.float32)],
        scratch_shapes=[pltpu.VMEM((p, n), jnp.float32)],
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary")),
        interpret=interpret,
        name="ssd_scan",
    )(x, b, c, *vec, initial_state)
