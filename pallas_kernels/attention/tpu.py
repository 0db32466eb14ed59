"""Flash and decode attention as Pallas TPU kernels (Mosaic).

Layout: q/o/dq are viewed as [B, T, H * D] and k/v/dk/dv as [B, S, KVH * D] (free reshapes of the
public [B, L, heads, D]); a (block, D) tile of one head is then a legal TPU block when D % 128 == 0
and blocks are multiples of 128. Query head h reads KV head h // G (by index map, never repeated).
T and S must be multiples of the blocks (ops.py pads and masks the tail with segment id 0).

Per-row vectors take the orientation their kernel needs (free reshapes): in the forward and dQ
kernels, query segment ids, lse and delta are columns ([.., T, 1]) and key segment ids rows
([.., 1, S]); the dK/dV kernel works on the transposed problem (rows = keys, so every matmul is NN
or NT) and takes them the other way round.

- forward and dQ: grid (B, H, q blocks, kv blocks), the last axis reducing into VMEM scratch
  (m and l lane-replicated to 128 lanes, acc/dq float32 [block_q, D]).
- dK/dV: grid (B, KVH, kv blocks, G * q blocks): the reduction axis walks the G query heads of the
  KV head and their query blocks, so GQA sums stay in VMEM (no per-query-head dK/dV in HBM).
- causal: query i sits at key index i + q_offset, an int32 [1] scalar-prefetched into SMEM (dynamic:
  a sequence shard's first position). Tiles with no visible key skip compute, and their index maps
  repeat the last (forward, dQ) or first (dK/dV) useful block index, so the pipeline issues no DMA
  for them.
- decode: grid (B, KVH, kv blocks) over queries regrouped as [B, KVH, M, D]; the row lengths are
  scalar-prefetched to skip (and not fetch) cache blocks past the last valid slot.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.attention import block_math as bm

DEFAULT_BLOCKS = (512, 512)
DEFAULT_DECODE_BLOCK_K = 512
BLOCK_MULTIPLE = 128  # blocks must be multiples of the lane width
ROW_MULTIPLE = 8      # decode query rows: a multiple of the sublane count
_LANES = 128


def _when_tile_visible(causal: bool, q_block, kv_block, block_q: int, block_k: int, q_offset):
    """Decorator running the body for a (query block, key block) tile with a visible key."""
    if not causal:
        return lambda body: body()
    return pl.when(kv_block * block_k <= q_block * block_q + block_q - 1 + q_offset)


def _kv_fetch_index(causal: bool, block_q: int, block_k: int, num_kv_blocks: int):
    """(q block, kv block, q_offset) -> key block to fetch: tiles past the diagonal repeat the last
    useful one (block 0 when the query block sees no key)."""
    def index(q_block, kv_block, q_offset):
        if not causal:
            return kv_block
        last = bm.causal_kv_block_count(q_block, block_q, block_k, num_kv_blocks, q_offset) - 1
        return jnp.maximum(jnp.minimum(kv_block, last), 0)
    return index


def _q_fetch_index(causal: bool, block_q: int, block_k: int, num_q_blocks: int):
    """(kv block, q block, q_offset) -> query block to fetch: tiles before the diagonal repeat the
    first useful one (the last block when no query sees the key block)."""
    def index(kv_block, q_block, q_offset):
        if not causal:
            return q_block
        first = bm.causal_first_q_block(kv_block, block_q, block_k, q_offset)
        return jnp.minimum(jnp.maximum(q_block, first), num_q_blocks - 1)
    return index


def _tile_positions(q_block, kv_block, shape, q_offset, q_axis: int):
    """int32 (q_pos, k_pos) of a tile of `shape` whose queries run along axis q_axis (query i at i + q_offset)."""
    q_pos = q_block * shape[q_axis] + q_offset + lax.broadcasted_iota(jnp.int32, shape, q_axis)
    k_pos = kv_block * shape[1 - q_axis] + lax.broadcasted_iota(jnp.int32, shape, 1 - q_axis)
    return q_pos, k_pos


def _init_softmax(m_scr, l_scr, acc_scr):
    m_scr[...] = jnp.full(m_scr.shape, bm.MASK_VALUE, jnp.float32)
    l_scr[...] = jnp.zeros(l_scr.shape, jnp.float32)
    acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)


def _update_softmax(m_scr, l_scr, acc_scr, s, mask, v):
    m, l, acc = bm.online_softmax_update(m_scr[:, :1], l_scr[:, :1], acc_scr[...], s, mask, v)
    m_scr[...] = jnp.broadcast_to(m, m_scr.shape)
    l_scr[...] = jnp.broadcast_to(l, l_scr.shape)
    acc_scr[...] = acc


def _softmax_scratch(rows: int, head_dim: int):
    return [pltpu.VMEM((rows, _LANES), jnp.float32), pltpu.VMEM((rows, _LANES), jnp.float32),
            pltpu.VMEM((rows, head_dim), jnp.float32)]


def _flash_fwd_kernel(q_offset_ref, q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, o_ref, lse_ref,
                      m_scr, l_scr, acc_scr, *, causal: bool, sm_scale: float, num_kv_blocks: int):
    q_block, kv_block, q_offset = pl.program_id(2), pl.program_id(3), q_offset_ref[0]
    block_q, block_k = q_ref.shape[0], k_ref.shape[0]

    @pl.when(kv_block == 0)
    def _init():
        _init_softmax(m_scr, l_scr, acc_scr)

    @_when_tile_visible(causal, q_block, kv_block, block_q, block_k, q_offset)
    def _update():
        q_pos, k_pos = _tile_positions(q_block, kv_block, (block_q, block_k), q_offset, q_axis=0)
        mask = bm.attend_mask(q_pos, k_pos, q_seg_ref[...], kv_seg_ref[...], causal=causal)
        s = bm.dot_nt(q_ref[...], k_ref[...]) * sm_scale
        _update_softmax(m_scr, l_scr, acc_scr, s, mask, v_ref[...])

    @pl.when(kv_block == num_kv_blocks - 1)
    def _write():
        out, lse = bm.finalize(m_scr[:, :1], l_scr[:, :1], acc_scr[...])
        o_ref[...] = out.astype(o_ref.dtype)
        lse_ref[...] = lse


def _flash_dkdv_kernel(q_offset_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref,
                       kv_seg_ref, dk_ref, dv_ref, dk_scr, dv_scr, *, causal: bool, sm_scale: float,
                       num_q_blocks: int, group: int):
    kv_block, step, q_offset = pl.program_id(2), pl.program_id(3), q_offset_ref[0]
    q_block = lax.rem(step, num_q_blocks)
    block_q, block_k = q_ref.shape[0], k_ref.shape[0]

    @pl.when(step == 0)
    def _init():
        dk_scr[...] = jnp.zeros(dk_scr.shape, jnp.float32)
        dv_scr[...] = jnp.zeros(dv_scr.shape, jnp.float32)

    @_when_tile_visible(causal, q_block, kv_block, block_q, block_k, q_offset)
    def _update():
        q_pos, k_pos = _tile_positions(q_block, kv_block, (block_k, block_q), q_offset, q_axis=1)
        mask_t = bm.attend_mask(q_pos, k_pos, q_seg_ref[...], kv_seg_ref[...], causal=causal)
        dk, dv = bm.dkdv_block(q_ref[...], k_ref[...], v_ref[...], do_ref[...], lse_ref[...],
                               delta_ref[...], mask_t, sm_scale)
        dk_scr[...] += dk
        dv_scr[...] += dv

    @pl.when(step == group * num_q_blocks - 1)
    def _write():
        dk_ref[...] = dk_scr[...].astype(dk_ref.dtype)
        dv_ref[...] = dv_scr[...].astype(dv_ref.dtype)


def _flash_dq_kernel(q_offset_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref,
                     kv_seg_ref, dq_ref, dq_scr, *, causal: bool, sm_scale: float, num_kv_blocks: int):
    q_block, kv_block, q_offset = pl.program_id(2), pl.program_id(3), q_offset_ref[0]
    block_q, block_k = q_ref.shape[0], k_ref.shape[0]

    @pl.when(kv_block == 0)
    def _init():
        dq_scr[...] = jnp.zeros(dq_scr.shape, jnp.float32)

    @_when_tile_visible(causal, q_block, kv_block, block_q, block_k, q_offset)
    def _update():
        q_pos, k_pos = _tile_positions(q_block, kv_block, (block_q, block_k), q_offset, q_axis=0)
        mask = bm.attend_mask(q_pos, k_pos, q_seg_ref[...], kv_seg_ref[...], causal=causal)
        dq_scr[...] += bm.dq_block(q_ref[...], k_ref[...], v_ref[...], do_ref[...], lse_ref[...],
                                   delta_ref[...], mask, sm_scale)

    @pl.when(kv_block == num_kv_blocks - 1)
    def _write():
        dq_ref[...] = dq_scr[...].astype(dq_ref.dtype)


def _flat(x):
    """[B, L, heads, D] -> [B, L, heads * D] (free)."""
    return x.reshape(*x.shape[:2], -1)


def _compiler_params(grid_rank: int):
    """Every grid axis parallel except the last, which reduces into scratch."""
    return pltpu.CompilerParams(dimension_semantics=("parallel",) * (grid_rank - 1) + ("arbitrary",))


def flash_forward(q, k, v, q_seg, kv_seg, q_offset, *, causal: bool, sm_scale: float, block_q: int,
                  block_k: int, interpret=False):
    """q [B, T, H, D], k/v [B, S, KVH, D], q_seg int32 [B, T], kv_seg int32 [B, S], q_offset int32 [1]
    (query i sits at key index i + q_offset[0]) -> (o [B, T, H, D] q.dtype, lse float32 [B, H, T])."""
    b, t, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    group = h // kvh
    num_kv_blocks = s // block_k
    kv_index = _kv_fetch_index(causal, block_q, block_k, num_kv_blocks)
    q_spec = pl.BlockSpec((None, block_q, d), lambda b_, h_, i, j, q_off: (b_, i, h_))
    kv_spec = pl.BlockSpec((None, block_k, d),
                           lambda b_, h_, i, j, q_off: (b_, kv_index(i, j, q_off[0]), lax.div(h_, group)))
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(b, h, t // block_q, num_kv_blocks),
        in_specs=[q_spec, kv_spec, kv_spec,
                  pl.BlockSpec((None, block_q, 1), lambda b_, h_, i, j, q_off: (b_, i, 0)),
                  pl.BlockSpec((None, 1, block_k),
                               lambda b_, h_, i, j, q_off: (b_, 0, kv_index(i, j, q_off[0])))],
        out_specs=[q_spec,
                   pl.BlockSpec((None, None, block_q, 1), lambda b_, h_, i, j, q_off: (b_, h_, i, 0))],
        scratch_shapes=_softmax_scratch(block_q, d),
    )
    out, lse = pl.pallas_call(
        functools.partial(_flash_fwd_kernel, causal=causal, sm_scale=sm_scale,
                          num_kv_blocks=num_kv_blocks),
        grid_spec=grid_spec,
        out_shape=[jax.ShapeDtypeStruct((b, t, h * d), q.dtype),
                   jax.ShapeDtypeStruct((b, h, t, 1), jnp.float32)],
        compiler_params=_compiler_params(4),
        interpret=interpret,
        name="flash_attention_fwd",
    )(q_offset, _flat(q), _flat(k), _flat(v), q_seg[:, :, None], kv_seg[:, None, :])
    return out.reshape(q.shape), lse.reshape(b, h, t)


def flash_backward(q, k, v, q_seg, kv_seg, q_offset, do, lse, delta, *, causal: bool, sm_scale: float,
                   block_q: int, block_k: int, interpret=False):
    """Gradients of `flash_forward`'s o (same q_offset).

    do [B, T, H, D] (q.dtype); lse, delta float32 [B, H, T] (delta = rowsum(o * do)).
    Returns (dq [B, T, H, D] q.dtype, dk, dv [B, S, KVH, D] k.dtype).
    """
    b, t, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    group = h // kvh
    num_q_blocks, num_kv_blocks = t // block_q, s // block_k
    q_flat, k_flat, v_flat, do_flat = _flat(q), _flat(k), _flat(v), _flat(do)

    # dK, dV: reduce over (query head of the group, query block) = step.
    q_index = _q_fetch_index(causal, block_q, block_k, num_q_blocks)

    def q_head(kh, step):  # query head of the group that reduction step `step` visits
        return kh * group + lax.div(step, num_q_blocks)

    def q_block(j, step, q_off):
        return q_index(j, lax.rem(step, num_q_blocks), q_off[0])

    q_spec = pl.BlockSpec((None, block_q, d),
                          lambda b_, kh, j, step, q_off: (b_, q_block(j, step, q_off), q_head(kh, step)))
    kv_spec = pl.BlockSpec((None, block_k, d), lambda b_, kh, j, step, q_off: (b_, j, kh))
    row_spec = pl.BlockSpec((None, None, 1, block_q),
                            lambda b_, kh, j, step, q_off: (b_, q_head(kh, step), 0, q_block(j, step, q_off)))
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(b, kvh, num_kv_blocks, group * num_q_blocks),
        in_specs=[q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec,
                  pl.BlockSpec((None, 1, block_q),
                               lambda b_, kh, j, step, q_off: (b_, 0, q_block(j, step, q_off))),
                  pl.BlockSpec((None, block_k, 1), lambda b_, kh, j, step, q_off: (b_, j, 0))],
        out_specs=[kv_spec, kv_spec],
        scratch_shapes=[pltpu.VMEM((block_k, d), jnp.float32), pltpu.VMEM((block_k, d), jnp.float32)],
    )
    dk, dv = pl.pallas_call(
        functools.partial(_flash_dkdv_kernel, causal=causal, sm_scale=sm_scale,
                          num_q_blocks=num_q_blocks, group=group),
        grid_spec=grid_spec,
        out_shape=[jax.ShapeDtypeStruct(k_flat.shape, k.dtype),
                   jax.ShapeDtypeStruct(v_flat.shape, v.dtype)],
        compiler_params=_compiler_params(4),
        interpret=interpret,
        name="flash_attention_dkdv",
    )(q_offset, q_flat, k_flat, v_flat, do_flat, lse[:, :, None, :], delta[:, :, None, :],
      q_seg[:, None, :], kv_seg[:, :, None])

    # dQ: like the forward.
    kv_index = _kv_fetch_index(causal, block_q, block_k, num_kv_blocks)
    q_spec = pl.BlockSpec((None, block_q, d), lambda b_, h_, i, j, q_off: (b_, i, h_))
    kv_spec = pl.BlockSpec((None, block_k, d),
                           lambda b_, h_, i, j, q_off: (b_, kv_index(i, j, q_off[0]), lax.div(h_, group)))
    col_spec = pl.BlockSpec((None, None, block_q, 1), lambda b_, h_, i, j, q_off: (b_, h_, i, 0))
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(b, h, num_q_blocks, num_kv_blocks),
        in_specs=[q_spec, kv_spec, kv_spec, q_spec, col_spec, col_spec,
                  pl.BlockSpec((None, block_q, 1), lambda b_, h_, i, j, q_off: (b_, i, 0)),
                  pl.BlockSpec((None, 1, block_k),
                               lambda b_, h_, i, j, q_off: (b_, 0, kv_index(i, j, q_off[0])))],
        out_specs=q_spec,
        scratch_shapes=[pltpu.VMEM((block_q, d), jnp.float32)],
    )
    dq = pl.pallas_call(
        functools.partial(_flash_dq_kernel, causal=causal, sm_scale=sm_scale,
                          num_kv_blocks=num_kv_blocks),
        grid_spec=grid_spec,
        out_shape=jax.ShapeDtypeStruct(q_flat.shape, q.dtype),
        compiler_params=_compiler_params(4),
        interpret=interpret,
        name="flash_attention_dq",
    )(q_offset, q_flat, k_flat, v_flat, do_flat, lse[..., None], delta[..., None], q_seg[:, :, None],
      kv_seg[:, None, :])
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)


def _decode_kernel(lengths_ref, q_ref, q_pos_ref, k_ref, v_ref, o_ref, m_scr, l_scr, acc_scr, *,
                   sm_scale: float, kv_len: int, num_kv_blocks: int):
    row, kv_block = pl.program_id(0), pl.program_id(2)
    rows, block_k = q_ref.shape[0], k_ref.shape[0]

    @pl.when(kv_block == 0)
    def _init():
        _init_softmax(m_scr, l_scr, acc_scr)

    @pl.when(kv_block * block_k < lengths_ref[row])
    def _update():
        k_pos = kv_block * block_k + lax.broadcasted_iota(jnp.int32, (rows, block_k), 1)
        mask = bm.decode_mask(q_pos_ref[...], k_pos, kv_len)
        s = bm.dot_nt(q_ref[...], k_ref[...]) * sm_scale
        _update_softmax(m_scr, l_scr, acc_scr, s, mask, v_ref[...])

    @pl.when(kv_block == num_kv_blocks - 1)
    def _write():
        out, _ = bm.finalize(m_scr[:, :1], l_scr[:, :1], acc_scr[...])
        o_ref[...] = out.astype(o_ref.dtype)


def decode_forward(q_rows, q_pos, k_cache, v_cache, lengths, *, sm_scale: float, block_k: int,
                   kv_len: int, interpret=False):
    """Decode attention over a KV cache.

    q_rows [B, KVH, M, D]: the queries of each KV head (M % 8 == 0); q_pos int32 [B, M]: each query
    row's cache slot (-1 for padding rows); k_cache/v_cache [B, S, KVH, D] with S % block_k == 0;
    lengths int32 [B]: no row attends a slot >= lengths[b] (blocks past it are neither fetched nor
    computed); slots >= kv_len are never attended. Returns [B, KVH, M, D] in q's dtype.
    """
    b, kvh, rows, d = q_rows.shape
    s = k_cache.shape[1]
    num_kv_blocks = s // block_k

    def cache_tile(b_, kh, j, lengths_ref):
        last_useful = jnp.maximum(lax.div(lengths_ref[b_] + block_k - 1, block_k) - 1, 0)
        return b_, jnp.minimum(j, last_useful), kh

    cache_spec = pl.BlockSpec((None, block_k, d), cache_tile)
    q_spec = pl.BlockSpec((None, None, rows, d), lambda b_, kh, j, lengths_ref: (b_, kh, 0, 0))
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(b, kvh, num_kv_blocks),
        in_specs=[q_spec, pl.BlockSpec((None, rows, 1), lambda b_, kh, j, lengths_ref: (b_, 0, 0)),
                  cache_spec, cache_spec],
        out_specs=q_spec,
        scratch_shapes=_softmax_scratch(rows, d),
    )
    return pl.pallas_call(
        functools.partial(_decode_kernel, sm_scale=sm_scale, kv_len=kv_len,
                          num_kv_blocks=num_kv_blocks),
        grid_spec=grid_spec,
        out_shape=jax.ShapeDtypeStruct(q_rows.shape, q_rows.dtype),
        compiler_params=_compiler_params(3),
        interpret=interpret,
        name="decode_attention",
    )(lengths, q_rows, q_pos[:, :, None], _flat(k_cache), _flat(v_cache))
