"""Plain-jnp attention: the oracle for the kernels' tests, and the core of the XLA path.

Shapes: q [B, T, H, D], k/v [B, S, KVH, D], H % KVH == 0; query head h reads KV head h // (H // KVH)
(grouped by reshape, K/V are never repeated). Masks are bool [B, T, S] (True = may attend).
"""
import jax
import jax.numpy as jnp

from pallas_kernels.attention import block_math


def masked_attention(q, k, v, mask, sm_scale: float, *, upcast: bool = True, return_lse: bool = False):
    """Softmax(q k^T * sm_scale, masked) v with float32 statistics; rows with no visible key give 0.

    upcast=True (the oracle): inputs are cast to float32 (float64 stays float64) and the matmuls run
    at HIGHEST precision; returns that dtype. upcast=False (the XLA path): matmul operands keep
    their dtype with float32 accumulation; returns float32. return_lse: also the log-sum-exp of each
    row's visible scaled logits, [B, H, T] in the statistics' dtype (-inf for a row with no visible key).
    """
    b, t, h, d = q.shape
    kvh = k.shape[2]
    qg = q.reshape(b, t, kvh, h // kvh, d)
    if upcast:
        dtype = jnp.promote_types(q.dtype, jnp.float32)
        qg, k, v = qg.astype(dtype), k.astype(dtype), v.astype(dtype)
        precision, acc_dtype = jax.lax.Precision.HIGHEST, dtype
    else:
        precision, acc_dtype = None, jnp.float32
    s = jnp.einsum("btkgd,bskd->bkgts", qg, k, precision=precision,
                   preferred_element_type=acc_dtype) * sm_scale
    visible = mask[:, None, None]
    s = jnp.where(visible, s, -jnp.inf)
    row_max = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.where(visible, jnp.exp(s - row_max), 0.0)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("bkgts,bskd->btkgd", p.astype(v.dtype), v,
                     precision=precision, preferred_element_type=acc_dtype).reshape(b, t, h, d)
    if not return_lse:
        return out
    lse = jnp.where(denom > 0, row_max + jnp.log(jnp.where(denom > 0, denom, 1.0)), -jnp.inf)
    return out, lse.reshape(b, h, t)


def self_attention_mask(q_segment_ids, kv_segment_ids, *, causal: bool, q_offset=0) -> jax.Array:
    """bool [B, T, S]: same non-zero segment and (not causal or key index <= query index).

    q_segment_ids int32 [B, T], kv_segment_ids int32 [B, S]; query t sits at index q_offset + t.
    """
    t, s = q_segment_ids.shape[1], kv_segment_ids.shape[1]
    q_pos = (q_offset + jnp.arange(t, dtype=jnp.int32))[None, :, None]
    k_pos = jnp.arange(s, dtype=jnp.int32)[None, None, :]
    return block_math.attend_mask(q_pos, k_pos, q_segment_ids[:, :, None],
                                  kv_segment_ids[:, None, :], causal=causal)


def decode_positions(lengths, num_queries: int) -> jax.Array:
    """int32 [B, Tq]: the cache slot of decode query t in row b, lengths[b] - Tq + t."""
    return lengths[:, None].astype(jnp.int32) - num_queries + jnp.arange(num_queries, dtype=jnp.int32)


def decode_attention_mask(lengths, num_queries: int, kv_len: int) -> jax.Array:
    """bool [B, Tq, S]: decode query t of row b (slot lengths[b] - Tq + t) sees slots <= its own."""
    q_pos = decode_positions(lengths, num_queries)[:, :, None]
    k_pos = jnp.arange(kv_len, dtype=jnp.int32)[None, None, :]
    return block_math.decode_mask(q_pos, k_pos, kv_len)


def attention_reference(q, k, v, *, segment_ids=None, causal: bool = True,
                        sm_scale: float | None = None) -> jax.Array:
    """Oracle of `ops.flash_attention`: [B, T, H, D] float32 (float64 for float64 inputs).

    segment_ids int32 [B, T] (0 = padding) applies to queries and keys alike (needs S == T).
    """
    b, t, _, d = q.shape
    s = k.shape[1]
    sm_scale = d ** -0.5 if sm_scale is None else sm_scale
    if segment_ids is None:
        q_seg, kv_seg = jnp.ones((b, t), jnp.int32), jnp.ones((b, s), jnp.int32)
    else:
        q_seg = kv_seg = segment_ids
    return masked_attention(q, k, v, self_attention_mask(q_seg, kv_seg, causal=causal), sm_scale)


def decode_attention_reference(q, k_cache, v_cache, lengths, *, sm_scale: float | None = None) -> jax.Array:
    """Oracle of `ops.decode_attention`: [B, Tq, H, D] float32 (float64 for float64 inputs)."""
    sm_scale = q.shape[3] ** -0.5 if sm_scale is None else sm_scale
    mask = decode_attention_mask(lengths, q.shape[1], k_cache.shape[1])
    return masked_attention(q, k_cache, v_cache, mask, sm_scale)
