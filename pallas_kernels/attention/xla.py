"""The XLA path of the attention ops: plain jnp, differentiable by ordinary autodiff.

Flash attention runs over chunks of q_chunk queries (lax.map, each chunk rematerialised in the
backward pass), so memory is O(B * H * q_chunk * S) float32 instead of O(B * H * T * S).
"""
import jax
import jax.numpy as jnp

from pallas_kernels.attention import reference

DEFAULT_Q_CHUNK = 1024


def flash_attention_xla(q, k, v, q_seg, kv_seg, *, causal: bool, sm_scale: float, return_lse: bool = False,
                        q_chunk: int = DEFAULT_Q_CHUNK, q_offset=0):
    """q [B, T, H, D], k/v [B, S, KVH, D], q_seg int32 [B, T], kv_seg int32 [B, S] -> [B, T, H, D] q.dtype
    (return_lse: and the float32 [B, H, T] log-sum-exp, -inf for rows with no visible key).

    Query i sits at key index i + q_offset (an int32 scalar, may be traced) for the causal mask.
    """
    b, t, h, d = q.shape

    def attend(q_part, seg_part, offset):
        mask = reference.self_attention_mask(seg_part, kv_seg, causal=causal, q_offset=offset)
        out, lse = reference.masked_attention(q_part, k, v, mask, sm_scale, upcast=False, return_lse=True)
        return out.astype(q.dtype), lse

    if t <= q_chunk:
        out, lse = attend(q, q_seg, q_offset)
    else:
        n = -(-t // q_chunk)
        pad = n * q_chunk - t
        q_parts = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, n, q_chunk, h, d).swapaxes(0, 1)
        seg_parts = jnp.pad(q_seg, ((0, 0), (0, pad))).reshape(b, n, q_chunk).swapaxes(0, 1)
        offsets = q_offset + jnp.arange(n, dtype=jnp.int32) * q_chunk
        outs, lses = jax.lax.map(jax.checkpoint(lambda args: attend(*args)), (q_parts, seg_parts, offsets))
        out = outs.swapaxes(0, 1).reshape(b, n * q_chunk, h, d)[:, :t]
        lse = jnp.moveaxis(lses, 0, 2).reshape(b, h, n * q_chunk)[:, :, :t]
    return (out, lse) if return_lse else out


def decode_attention_xla(q, k_cache, v_cache, lengths, *, sm_scale: float) -> jax.Array:
    """q [B, Tq, H, D], caches [B, S, KVH, D], lengths int32 [B] -> [B, Tq, H, D] q.dtype."""
    mask = reference.decode_attention_mask(lengths, q.shape[1], k_cache.shape[1])
    return reference.masked_attention(q, k_cache, v_cache, mask, sm_scale, upcast=False).astype(q.dtype)
