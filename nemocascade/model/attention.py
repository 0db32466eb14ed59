"""Grouped-query attention with packed segments and a per-row KV cache.

Masking rule: query ``i`` attends key ``j`` iff ``j <= i`` (by slot) and both lie in the same non-zero
segment. With a cache, slot = ``cache.lengths[b] + t`` and keys are the cache's written slots.
Shapes: q [B, T, H, Dh], k/v [B, S, K, Dh] with ``G = H // K`` query heads per KV head (grouped by
reshape, never repeated).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nemocascade.model.config import ModelConfig
from nemocascade.model.layers import RMSNorm, apply_rope, at_least_f32, dtype_of, param


def grouped_attention(q, k, v, mask):
    """Softmax attention in float32 (float64 for float64 inputs). q [B,T,H,Dh], k/v [B,S,K,Dh], mask bool[B,T,S] -> [B,T,H,Dh].

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
    """Writes new [B, T, K, Dh] into cache [B, S, K, Dh] at row-wise slot offsets ``starts`` int32[B]."""
    def one(row_cache, row_new, start):
        return jax.lax.dynamic_update_slice(row_cache, row_new.astype(row_cache.dtype), (start, 0, 0))
    return jax.vmap(one)(cache_kv, new, starts)


def cached_attention_mask(lengths, num_new_valid, t, s):
    """bool[B, T, S]: query t (slot lengths+t) sees written slots j <= its slot and j < lengths + valid."""
    query_slot = lengths[:, None] + jnp.arange(t)[None, :]                      # [B, T]
    key_slot = jnp.arange(s)[None, None, :]                                       # [1, 1, S]
    written = key_slot < (lengths + num_new_valid)[:, None, None]
    return (key_slot <= query_slot[:, :, None]) & written


class Attention(nn.Module):
    cfg: ModelConfig

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
            out = grouped_attention(q, k, v, self_attention_mask(segment_ids))
            new_cache = None
        else:
            keys = write_cache(layer_cache["k"], k, lengths)
            values = write_cache(layer_cache["v"], v, lengths)
            valid = jnp.sum(segment_ids > 0, axis=1)
            mask = cached_attention_mask(lengths, valid, x.shape[1], keys.shape[1])
            out = grouped_attention(q, keys, values, mask)
            new_cache = {"k": keys, "v": values}
        return jnp.einsum("bthk,hkd->btd", out, wo), new_cache
