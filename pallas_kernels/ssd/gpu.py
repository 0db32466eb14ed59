"""The chunked SSD scan as one Pallas GPU (Triton) kernel.

Grid (B, H): one program per (batch row, head) walks the head's K chunks in a fori_loop, carrying
the [P, N] float32 state in registers: each step loads one chunk of x [L, P] and of its group's
b/c [L, N] (group h // (H // G), by index map) and that chunk's coefficient vectors, runs
`chunk_math.chunk_step` and stores the chunk's y. The final state is written once at the end. One
pass over the activations and no per-chunk states in HBM, but only B * H programs: with few batch
rows and heads the GPU is under-occupied (a chunk-parallel split into a chunk-state kernel, a state
scan and an output kernel would fix that; not done).

Triton needs power-of-two tensors of at least 16 per matmul dim: ops.py runs the compiled kernel
only when L, P and N are powers of two >= 16 (ops.kernel_supports). Same layout as tpu.py.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.ssd import chunk_math

_NUM_VECTORS = len(chunk_math.ChunkVectors._fields)


def _ssd_kernel(x_ref, b_ref, c_ref, *refs, num_chunks: int):
    vec_refs, (init_ref, y_ref, final_ref) = refs[:_NUM_VECTORS], refs[_NUM_VECTORS:]

    def one_chunk(chunk, state):
        vec = chunk_math.ChunkVectors(*(ref[chunk] for ref in vec_refs))
        y, state = chunk_math.chunk_step(x_ref[chunk], b_ref[chunk], c_ref[chunk], vec, state)
        y_ref[chunk] = y.astype(y_ref.dtype)
        return state

    final_ref[...] = lax.fori_loop(0, num_chunks, one_chunk, init_ref[...])


def _head_spec(array, index_map):
    """BlockSpec of all chunks of one head (or group) of a [B, heads, K, d1, d2] array."""
    return pl.BlockSpec((None, None, *array.shape[2:]), index_map)


def ssd_gpu(x, b, c, vec: chunk_math.ChunkVectors, initial_state, *, interpret: bool = False):
    """Same contract as xla.ssd_xla, with y in x's dtype."""
    bsz, h, k, size, p = x.shape
    n = b.shape[-1]
    per_group = h // b.shape[1]
    head_map = lambda b_, h_: (b_, h_, 0, 0, 0)
    group_map = lambda b_, h_: (b_, lax.div(h_, per_group), 0, 0, 0)
    state_spec = pl.BlockSpec((None, None, p, n), lambda b_, h_: (b_, h_, 0, 0))
    return pl.pallas_call(
        functools.partial(_ssd_kernel, num_chunks=k),
        grid=(bsz, h),
        in_specs=[_head_spec(x, head_map), _head_spec(b, group_map), _head_spec(c, group_map),
                  *(_head_spec(v, head_map) for v in vec), state_spec],
        out_specs=[_head_spec(x, head_map), state_spec],
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype),
                   jax.ShapeDtypeStruct((bsz, h, p, n), jnp.float32)],
        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=1),
        interpret=interpret,
        name="ssd_scan",
    )(x, b, c, *vec, initial_state)
