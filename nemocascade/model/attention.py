"""Grouped-query attention with packed segments and a per-row KV cache.

Masking rule: query ``i`` attends key ``j`` iff ``j <= i`` (by slot) and both lie in the same non-zero
segment. With a cache, token ``t`` of row ``b`` goes to slot ``lengths[b] + t`` and attends the written,
valid slots ``j <= its slot`` and ``j < lengths[b] + valid[b]``; writes past the cache's end are dropped.
Shapes: q [B, T, H, Dh], k/v [B, S, K, Dh] with ``G = H // K`` query heads per KV head (grouped by
reshape, never repeated).

Backends (``cfg.kernel_impl``): "xla" runs ``grouped_attention`` below; the Pallas kernels replace it in
``self_attention`` (flash attention) and, for single-token decode steps, in ``cached_attention``
(decode attention). A cached call with several tokens runs the XLA path, except a prefill into an empty
cache (``Attention(prefill=True)``), which is self-attention of the new tokens and so runs flash attention.
On a mesh the kernels run per device on its rows and heads (``kernels.on_shards``).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from nemocascade.model.config import ModelConfig
from nemocascade.model.kernels import on_shards, pallas_op
from nemocascade.model.layers import RMSNorm, apply_rope, at_least_f32, dtype_of, mesh_axes, param


def grouped_attention(q, k, v, mask):
    """Softmax attention in float32 (float64 for float64 inputs).

    q [B,T,H,Dh], k/v [B,S,K,Dh], mask bool[B,T,S] -> [B,T,H,Dh] in q's dtype.

    Rows with no visible key (padding queries) return zeros.
    """
    b, t, h, dh = q.shape
    kv = k.shape[2]
    qg = at_least_f32(q.reshape(b, t, kv, h // kv, dh))
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, at_least_f32(k)) * (dh ** -0.5)
    scores = jnp.where(mask[:, None, None], scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.exp(scores - row_max)
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    probs = weights / jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, at_least_f32(v))
    return out.reshape(b, t, h, dh).astype(q.dtype)


def self_attention_mask(segment_ids):
    """bool[B, T, T]: causal and same non-zero segment."""
    t = segment_ids.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] > 0)
    return causal[None] & same


def write_cache(cache_kv, new, starts):
    """Writes new [B, T, K, Dh] into cache [B, S, K, Dh] at slots ``starts[b] + t`` (starts int32[B]).

    Slots >= S are dropped (not clamped), so right padding that runs past the end never shifts the
    valid tokens' slots.
    """
    b, t = new.shape[:2]
    slots = starts[:, None] + jnp.arange(t, dtype=starts.dtype)[None, :]
    return cache_kv.at[jnp.arange(b)[:, None], slots].set(new.astype(cache_kv.dtype), mode="drop")


def cached_attention_mask(lengths, num_new_valid, t, s):
    """bool[B, T, S]: query t (slot lengths+t) sees written slots j <= its slot and j < lengths + valid."""
    query_slot = lengths[:, None] + jnp.arange(t)[None, :]                      # [B, T]
    key_slot = jnp.arange(s)[None, None, :]                                       # [1, 1, S]
    written = key_slot < (lengths + num_new_valid)[:, None, None]
    return (key_slot <= query_slot[:, :, None]) & written


def self_attention(q, k, v, segment_ids, impl: str):
    """Causal attention inside segments (no cache). q [B,T,H,Dh], k/v [B,T,K,Dh] -> [B,T,H,Dh]."""
    if impl == "xla":
        return grouped_attention(q, k, v, self_attention_mask(segment_ids))
    flash = pallas_op("attention.ops", "flash_attention", impl)
    rows, heads = _kernel_specs(q, k)
    return on_shards(lambda q, k, v, segs: flash(q, k, v, segment_ids=segs, causal=True, impl=impl),
                     (heads, heads, heads, rows), heads, q, k, v, segment_ids)


def _kernel_specs(q, k):
    """(spec of per-row arrays [B, ...], spec of [B, T, heads, Dh] arrays) for a Pallas kernel on the active
    mesh: rows over the batch axes, heads over ``tensor`` when it divides the KV heads."""
    rows = mesh_axes("batch", q.shape[0]) or None
    return P(rows), P(rows, None, mesh_axes("heads", k.shape[2]) or None, None)


def cached_attention(q, keys, values, lengths, num_new_valid, impl: str):
    """Queries at slots ``lengths + t`` over the updated cache keys/values [B,S,K,Dh] -> [B,T,H,Dh].

    Single-token steps may use the Pallas decode kernel: ``decode_attention(.., lengths + 1)`` puts the
    query at slot ``lengths[b]`` and lets it see slots ``<= lengths[b]``, exactly the mask below for a valid
    token (for a padding token, whose output nothing reads, it also sees its own slot).
    """
    t = q.shape[1]
    if impl != "xla" and t == 1:
        decode = pallas_op("attention.ops", "decode_attention", impl)
        rows, heads = _kernel_specs(q, keys)
        return on_shards(lambda q, k, v, ends: decode(q, k, v, ends, impl=impl), (heads, heads, heads, rows), heads,
                         q, keys, values, lengths + 1)
    mask = cached_attention_mask(lengths, num_new_valid, t, keys.shape[1])
    return grouped_attention(q, keys, values, mask)


class Attention(nn.Module):
    """``prefill=True`` (with a cache): the cache is empty, as ``init_cache`` makes it, so the new tokens attend
    only each other: causal self-attention inside their segments, while their K/V are written. For every valid
    token this equals the cached path's mask with ``lengths = 0``; padding queries (segment 0) get zeros
    instead of attending the valid keys, and nothing reads their outputs' cache slots before decode
    overwrites them."""

    cfg: ModelConfig
    prefill: bool = False

    @nn.compact
    def __call__(self, x, positions, segment_ids, layer_cache=None, lengths=None):
        """x [B, T, D] -> ([B, T, D], new layer cache or None)."""
        cfg = self.cfg
        d, h, kv, dh = x.shape[-1], cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
        dtype = dtype_of(cfg.dtype)
        init = nn.initializers.normal(stddev=d ** -0.5)
        wq = param(self, "wq", (d, h, dh), ("embed", "heads", "head_dim"), init, cfg).astype(dtype)
        wk = param(self, "wk", (d, kv, dh), ("embed", "kv_heads", "head_dim"), init, cfg).astype(dtype)
        wv = param(self, "wv", (d, kv, dh), ("embed", "kv_heads", "head_dim"), init, cfg).astype(dtype)
        wo = param(self, "wo", (h, dh, d), ("heads", "head_dim", "embed"),
                   nn.initializers.normal(stddev=(h * dh) ** -0.5), cfg).astype(dtype)
        q = jnp.einsum("btd,dhk->bthk", x, wq)
        k = jnp.einsum("btd,dhk->bthk", x, wk)
        v = jnp.einsum("btd,dhk->bthk", x, wv)
        if cfg.qk_norm:
            q = RMSNorm(cfg, axis_name="head_dim", name="q_norm")(q)
            k = RMSNorm(cfg, axis_name="head_dim", name="k_norm")(k)
        if cfg.use_rope:
            q = apply_rope(q, positions, cfg.rope_theta)
            k = apply_rope(k, positions, cfg.rope_theta)
        if layer_cache is None:
            out = self_attention(q, k, v, segment_ids, cfg.kernel_impl)
            new_cache = None
        else:
            keys = write_cache(layer_cache["k"], k, lengths)
            values = write_cache(layer_cache["v"], v, lengths)
            if self.prefill:
                out = self_attention(q, k, v, segment_ids, cfg.kernel_impl)
            else:
                valid = jnp.sum(segment_ids > 0, axis=1)
                out = cached_attention(q, keys, values, lengths, valid, cfg.kernel_impl)
            new_cache = {"k": keys, "v": values}
        return jnp.einsum("bthk,hkd->btd", out, wo), new_cache
