"""Flash and decode attention as Pallas GPU kernels (Triton lowering).

Layouts are the public ones: q/o/dq [B, T, H, D], k/v [B, S, KVH, D]; query head h reads KV head
h // G with G = H // KVH (by index map, never repeated). Block sizes and D must be powers of two
(>= 16 for the tensor-core dots); T and S must be multiples of the blocks (ops.py pads and masks
the tail with segment id 0).

Query i sits at key index i + q_offset, q_offset an int32 [1] input read in the kernels (dynamic: a
sequence shard's first position), so the causal diagonal and the blocks it bounds move with it.

- forward: grid (q blocks, B, H); each program keeps one query block and loops over the key blocks
  up to the causal diagonal with an online softmax (float32 m, l, acc); writes o and the float32
  logsumexp [B, H, T].
- backward: two kernels, no atomics. dK/dV: grid (kv blocks, B, KVH); each program owns one key
  block and loops over the G query heads of its KV head and over the query blocks at or below the
  diagonal (possibly none), so GQA sums happen in registers. dQ: grid (q blocks, B, H), like the
  forward.
- decode: grid (B, KVH, splits) over queries regrouped as [B, KVH, M, D] (the G heads x Tq tokens of
  a KV head share one key tile); each program scans its slice of the cache up to the last visible
  slot and returns unnormalised partials, merged across splits in `decode_forward`.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.attention import block_math as bm

# Default tiles (block_q, block_k) for the forward; the backward uses at most BACKWARD_BLOCK.
DEFAULT_BLOCKS = (128, 64)
BACKWARD_BLOCK = 64
DEFAULT_DECODE_BLOCK_K = 64
MIN_BLOCK = 16


def _compiler_params(head_dim: int) -> pltriton.CompilerParams:
    return pltriton.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=2)


def _tile(index, size: int):
    """Slice of the index-th tile of `size` rows."""
    return pl.ds(pl.multiple_of(index * size, size), size)


def _positions(index, size: int):
    """int32 [size]: the absolute positions of the index-th tile."""
    return index * size + jnp.arange(size, dtype=jnp.int32)


def _init_stats(rows: int, head_dim: int):
    return (jnp.full((rows,), bm.MASK_VALUE, jnp.float32), jnp.zeros((rows,), jnp.float32),
            jnp.zeros((rows, head_dim), jnp.float32))


def _flash_fwd_kernel(q_offset_ref, q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, o_ref, lse_ref, *,
                      causal: bool, sm_scale: float, block_k: int):
    block_q, head_dim = q_ref.shape
    q_block, q_offset = pl.program_id(0), q_offset_ref[0]
    num_kv_blocks = k_ref.shape[0] // block_k
    q = q_ref[...]
    q_pos = _positions(q_block, block_q)[:, None] + q_offset
    q_seg = q_seg_ref[...][:, None]

    def one_kv_block(kv_block, carry):
        keys = _tile(kv_block, block_k)
        mask = bm.attend_mask(q_pos, _positions(kv_block, block_k)[None, :], q_seg,
                              kv_seg_ref[keys][None, :], causal=causal)
        s = bm.dot_nt(q, k_ref[keys, :]) * sm_scale
        return bm.online_softmax_update(*carry, s, mask, v_ref[keys, :])

    end = (bm.causal_kv_block_count(q_block, block_q, block_k, num_kv_blocks, q_offset) if causal
           else num_kv_blocks)
    out, lse = bm.finalize(*lax.fori_loop(0, end, one_kv_block, _init_stats(block_q, head_dim)))
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse


def _flash_dkdv_kernel(q_offset_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref,
                       kv_seg_ref, dk_ref, dv_ref, *, causal: bool, sm_scale: float, block_q: int):
    block_k, head_dim = k_ref.shape
    kv_block, q_offset = pl.program_id(0), q_offset_ref[0]
    group = q_ref.shape[1]
    num_q_blocks = q_ref.shape[0] // block_q
    k, v = k_ref[...], v_ref[...]
    k_pos = _positions(kv_block, block_k)[:, None]
    kv_seg = kv_seg_ref[...][:, None]
    first = bm.causal_first_q_block(kv_block, block_q, block_k, q_offset) if causal else 0

    def one_head(g, carry):
        def one_q_block(q_block, carry):
            rows = _tile(q_block, block_q)
            mask_t = bm.attend_mask(_positions(q_block, block_q)[None, :] + q_offset, k_pos,
                                    q_seg_ref[rows][None, :], kv_seg, causal=causal)
            dk, dv = bm.dkdv_block(q_ref[rows, g, :], k, v, do_ref[rows, g, :],
                                   lse_ref[g, rows][None, :], delta_ref[g, rows][None, :],
                                   mask_t, sm_scale)
            return carry[0] + dk, carry[1] + dv

        return lax.fori_loop(first, num_q_blocks, one_q_block, carry)

    zeros = jnp.zeros((block_k, head_dim), jnp.float32)
    dk, dv = lax.fori_loop(0, group, one_head, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _flash_dq_kernel(q_offset_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref,
                     kv_seg_ref, dq_ref, *, causal: bool, sm_scale: float, block_k: int):
    block_q, head_dim = q_ref.shape
    q_block, q_offset = pl.program_id(0), q_offset_ref[0]
    num_kv_blocks = k_ref.shape[0] // block_k
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]
    q_pos = _positions(q_block, block_q)[:, None] + q_offset
    q_seg = q_seg_ref[...][:, None]

    def one_kv_block(kv_block, dq):
        keys = _tile(kv_block, block_k)
        mask = bm.attend_mask(q_pos, _positions(kv_block, block_k)[None, :], q_seg,
                              kv_seg_ref[keys][None, :], causal=causal)
        return dq + bm.dq_block(q, k_ref[keys, :], v_ref[keys, :], do, lse, delta, mask, sm_scale)

    end = (bm.causal_kv_block_count(q_block, block_q, block_k, num_kv_blocks, q_offset) if causal
           else num_kv_blocks)
    dq = lax.fori_loop(0, end, one_kv_block, jnp.zeros((block_q, head_dim), jnp.float32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


def _head_tile_spec(block: int, head_dim: int, index_map):
    """BlockSpec of a [block, D] tile of one head of a [B, L, heads, D] array."""
    return pl.BlockSpec((None, block, None, head_dim), index_map)


# The whole int32 [1] q_offset in every program (any grid of rank 3).
_OFFSET_SPEC = pl.BlockSpec((1,), lambda i, b_, h_: (0,))


def flash_forward(q, k, v, q_seg, kv_seg, q_offset, *, causal: bool, sm_scale: float, block_q: int,
                  block_k: int, interpret: bool = False):
    """q [B, T, H, D], k/v [B, S, KVH, D], q_seg int32 [B, T], kv_seg int32 [B, S], q_offset int32 [1]
    (query i sits at key index i + q_offset[0]) -> (o [B, T, H, D] q.dtype, lse float32 [B, H, T])."""
    b, t, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    group = h // kvh
    q_spec = _head_tile_spec(block_q, d, lambda i, b_, h_: (b_, i, h_, 0))
    kv_spec = _head_tile_spec(s, d, lambda i, b_, h_: (b_, 0, lax.div(h_, group), 0))
    kernel = functools.partial(_flash_fwd_kernel, causal=causal, sm_scale=sm_scale, block_k=block_k)
    return pl.pallas_call(
        kernel,
        grid=(t // block_q, b, h),
        in_specs=[_OFFSET_SPEC, q_spec, kv_spec, kv_spec,
                  pl.BlockSpec((None, block_q), lambda i, b_, h_: (b_, i)),
                  pl.BlockSpec((None, s), lambda i, b_, h_: (b_, 0))],
        out_specs=[q_spec, pl.BlockSpec((None, None, block_q), lambda i, b_, h_: (b_, h_, i))],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                   jax.ShapeDtypeStruct((b, h, t), jnp.float32)],
        compiler_params=_compiler_params(d),
        interpret=interpret,
        name="flash_attention_fwd",
    )(q_offset, q, k, v, q_seg, kv_seg)


def backward_blocks(block_q: int, block_k: int) -> tuple[int, int]:
    """(block_q, block_k) of the backward kernels, given the forward's (they divide them)."""
    return min(block_q, BACKWARD_BLOCK), min(block_k, BACKWARD_BLOCK)


def flash_backward(q, k, v, q_seg, kv_seg, q_offset, do, lse, delta, *, causal: bool, sm_scale: float,
                   block_q: int, block_k: int, interpret: bool = False):
    """Gradients of `flash_forward`'s o (same q_offset).

    do [B, T, H, D] (q.dtype); lse, delta float32 [B, H, T] (delta = rowsum(o * do)).
    Returns (dq [B, T, H, D] q.dtype, dk, dv [B, S, KVH, D] k.dtype).
    """
    b, t, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    group = h // kvh
    block_q, block_k = backward_blocks(block_q, block_k)
    params = dict(compiler_params=_compiler_params(d), interpret=interpret)

    # dK, dV: one program per (key block, batch row, KV head); q/do/lse/delta of its G heads whole.
    kv_tile = _head_tile_spec(block_k, d, lambda j, b_, kh: (b_, j, kh, 0))
    group_rows = pl.BlockSpec((None, t, group, d), lambda j, b_, kh: (b_, 0, kh, 0))
    group_stats = pl.BlockSpec((None, group, t), lambda j, b_, kh: (b_, kh, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_flash_dkdv_kernel, causal=causal, sm_scale=sm_scale, block_q=block_q),
        grid=(s // block_k, b, kvh),
        in_specs=[_OFFSET_SPEC, group_rows, kv_tile, kv_tile, group_rows, group_stats, group_stats,
                  pl.BlockSpec((None, t), lambda j, b_, kh: (b_, 0)),
                  pl.BlockSpec((None, block_k), lambda j, b_, kh: (b_, j))],
        out_specs=[kv_tile, kv_tile],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        name="flash_attention_dkdv",
        **params,
    )(q_offset, q, k, v, do, lse, delta, q_seg, kv_seg)

    # dQ: one program per (query block, batch row, query head), like the forward.
    q_tile = _head_tile_spec(block_q, d, lambda i, b_, h_: (b_, i, h_, 0))
    kv_whole = _head_tile_spec(s, d, lambda i, b_, h_: (b_, 0, lax.div(h_, group), 0))
    stats_tile = pl.BlockSpec((None, None, block_q), lambda i, b_, h_: (b_, h_, i))
    dq = pl.pallas_call(
        functools.partial(_flash_dq_kernel, causal=causal, sm_scale=sm_scale, block_k=block_k),
        grid=(t // block_q, b, h),
        in_specs=[_OFFSET_SPEC, q_tile, kv_whole, kv_whole, q_tile, stats_tile, stats_tile,
                  pl.BlockSpec((None, block_q), lambda i, b_, h_: (b_, i)),
                  pl.BlockSpec((None, s), lambda i, b_, h_: (b_, 0))],
        out_specs=q_tile,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        name="flash_attention_dq",
        **params,
    )(q_offset, q, k, v, do, lse, delta, q_seg, kv_seg)
    return dq, dk, dv


def _decode_kernel(q_ref, q_pos_ref, k_ref, v_ref, acc_ref, m_ref, l_ref, *, sm_scale: float,
                   block_k: int, blocks_per_split: int, kv_len: int):
    rows, head_dim = q_ref.shape
    q = q_ref[...]
    q_pos = q_pos_ref[...]
    start = pl.program_id(2) * blocks_per_split
    visible = jnp.minimum(jnp.max(q_pos) + 1, kv_len)  # slots [0, visible) may be attended
    end = jnp.minimum(start + blocks_per_split, lax.div(visible + block_k - 1, block_k))

    def one_kv_block(kv_block, carry):
        keys = _tile(kv_block, block_k)
        mask = bm.decode_mask(q_pos[:, None], _positions(kv_block, block_k)[None, :], kv_len)
        s = bm.dot_nt(q, k_ref[keys, :]) * sm_scale
        return bm.online_softmax_update(*carry, s, mask, v_ref[keys, :])

    m, l, acc = lax.fori_loop(start, end, one_kv_block, _init_stats(rows, head_dim))
    acc_ref[...] = acc
    m_ref[...] = m
    l_ref[...] = l


def decode_forward(q_rows, q_pos, k_cache, v_cache, *, sm_scale: float, block_k: int,
                   num_splits: int, kv_len: int, interpret: bool = False):
    """Decode attention over a KV cache, split over `num_splits` programs per (row, KV head).

    q_rows [B, KVH, M, D]: the queries of each KV head (M a power of two >= 16);
    q_pos int32 [B, M]: each query row's cache slot (-1 for padding rows: sees nothing);
    k_cache/v_cache [B, S, KVH, D] with S % (block_k * num_splits) == 0; slots >= kv_len are never
    attended. Returns [B, KVH, M, D] in q's dtype (0 for rows that see no slot).
    """
    b, kvh, rows, d = q_rows.shape
    s = k_cache.shape[1]
    blocks_per_split = s // (block_k * num_splits)
    kernel = functools.partial(_decode_kernel, sm_scale=sm_scale, block_k=block_k,
                               blocks_per_split=blocks_per_split, kv_len=kv_len)
    cache_spec = pl.BlockSpec((None, s, None, d), lambda b_, kh, sp: (b_, 0, kh, 0))
    stat_spec = pl.BlockSpec((None, None, None, rows), lambda b_, kh, sp: (b_, kh, sp, 0))
    acc, m, l = pl.pallas_call(
        kernel,
        grid=(b, kvh, num_splits),
        in_specs=[pl.BlockSpec((None, None, rows, d), lambda b_, kh, sp: (b_, kh, 0, 0)),
                  pl.BlockSpec((None, rows), lambda b_, kh, sp: (b_, 0)),
                  cache_spec, cache_spec],
        out_specs=[pl.BlockSpec((None, None, None, rows, d), lambda b_, kh, sp: (b_, kh, sp, 0, 0)),
                   stat_spec, stat_spec],
        out_shape=[jax.ShapeDtypeStruct((b, kvh, num_splits, rows, d), jnp.float32),
                   jax.ShapeDtypeStruct((b, kvh, num_splits, rows), jnp.float32),
                   jax.ShapeDtypeStruct((b, kvh, num_splits, rows), jnp.float32)],
        compiler_params=_compiler_params(d),
        interpret=interpret,
        name="decode_attention",
    )(q_rows, q_pos, k_cache, v_cache)
    # Merge the splits: rescale each partial to the common max, then normalise once.
    m_all = jnp.max(m, axis=2)
    weight = jnp.exp(m - m_all[:, :, None])
    out, _ = bm.finalize(m_all, jnp.sum(weight * l, axis=2),
                         jnp.sum(weight[..., None] * acc, axis=2))
    return out.astype(q_rows.dtype)
