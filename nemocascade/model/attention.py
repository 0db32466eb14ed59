"""Grouped-query attention with packed segments and a per-row KV cache.

Masking rule: query ``i`` attends key ``j`` iff ``j <= i`` (by slot) and both lie in the same non-zero
segment. With a cache, token ``t`` of row ``b`` goes to slot ``lengths[b] + t`` and attends the written,
valid slots ``j <= its slot`` and ``j < lengths[b] + valid[b]``; writes past the cache's end are dropped.
Shapes: q [B, T, H, Dh], k/v [B, S, K, Dh] with ``G = H // K`` query heads per KV head (grouped by
reshape, never repeated).

Backends (``cfg.kernel_impl``): "xla" runs ``grouped_attention`` below; the Pallas kernels replace it in
``self_attention`` (flash attention) and in ``cached_attention`` (decode attention, for a decode step and for a
few tokens fed into a cache, e.g. a multi-turn episode's observations: no f32 [T, S] scores). A prefill into an
empty cache (``Attention(prefill=True)``) is self-attention of the new tokens and so runs flash attention.
On a mesh the kernels run per device on its rows and heads (``kernels.on_shards``).

Sequence parallelism (``Attention(split_length=True)`` on a mesh whose ``sequence`` axis divides T): each
device holds its chunks of its rows' tokens in the zigzag layout of ``sequence_layout.py`` (chunks ``i`` and
``2S-1-i`` of 2S); it all-gathers the keys, values and segment ids over ``sequence``, puts them in the rows' order
and attends each of its chunks of queries (at their slots in the row) to the keys up to the last chunk that can
precede it: on the XLA path in query chunks of ``sequence_query_chunk(T)`` that the backward recomputes (what a
layer keeps for the backward is q, the gathered k/v and the output, not the f32 [H, T/S, T] probabilities); with
the Pallas kernels as one flash call per chunk, placed at its slots (``q_offset``), so that each device computes
the same number of key blocks: those up to its queries' diagonals.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from nemocascade.model.config import ModelConfig
from nemocascade.model.kernels import on_shards, pallas_op
from nemocascade.model import sequence_layout
from nemocascade.model.layers import RMSNorm, apply_rope, at_least_f32, dtype_of, mesh_axes, param, row_axis


def sequence_query_chunk(num_keys: int) -> int:
    """Queries per chunk of a sequence-parallel shard's attention over ``num_keys`` keys: up to 512, and at most
    2**22 query-key pairs (16 MiB of f32 scores per row and head)."""
    return max(1, min(512, 2 ** 22 // num_keys))


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


def self_attention(q, k, v, segment_ids, impl: str, *, split=((), 1), rows: str = "batch"):
    """Causal attention inside segments (no cache). q [B,T,H,Dh], k/v [B,T,K,Dh] -> [B,T,H,Dh].

    ``split``: ``sequence_layout.sequence_split``'s (sequence axes, chunks per device) when T is split over the
    ``sequence`` mesh axes (see the module docstring); ``rows``: the logical axis of the rows otherwise.
    """
    sequence, per_device = split
    if sequence:
        tokens, heads = _kernel_specs(q, k, sequence)
        return on_shards(functools.partial(_sequence_shard_attention, sequence=sequence, per_device=per_device,
                                           impl=impl),
                         (heads, heads, heads, tokens), heads, q, k, v, segment_ids)
    if impl == "xla":
        return grouped_attention(q, k, v, self_attention_mask(segment_ids))
    flash = pallas_op("attention.ops", "flash_attention", impl)
    tokens, heads = _kernel_specs(q, k, rows=rows)
    return on_shards(lambda q, k, v, segs: flash(q, k, v, segment_ids=segs, causal=True, impl=impl),
                     (heads, heads, heads, tokens), heads, q, k, v, segment_ids)


def _kernel_specs(q, k, sequence=(), rows: str = "batch"):
    """(spec of per-token arrays [B, T], spec of [B, T, heads, Dh] arrays) for a per-device call on the active
    mesh: rows over the axes of the logical axis ``rows`` (``layers.row_axis``), tokens over ``sequence`` (the
    given axes), heads over ``tensor`` when it divides the KV heads."""
    rows, tokens = mesh_axes(rows, q.shape[0]) or None, sequence or None
    return P(rows, tokens), P(rows, tokens, mesh_axes("heads", k.shape[2]) or None, None)


def _gathered_keys(k, v, segment_ids, sequence, per_device):
    """The keys, values and segment ids of all the rows' tokens [b, T, ...], all-gathered over ``sequence`` and
    put in the rows' order, and this device's query slots int32[t] (``sequence_layout``'s chunks)."""
    num_shards = math.prod(jax.lax.axis_size(axis) for axis in sequence)
    gathered = (sequence_layout.in_row_order(jax.lax.all_gather(a, sequence, axis=1, tiled=True), num_shards,
                                             per_device) for a in (k, v, segment_ids))
    chunk = k.shape[1] // per_device
    slots = sequence_layout.local_chunks(sequence, per_device)[:, None] * chunk + jnp.arange(chunk)
    return (*gathered, slots.reshape(-1).astype(jnp.int32))


def _sequence_shard_attention(q, k, v, segment_ids, *, sequence, per_device, impl):
    """One device's queries q [b, t, h, Dh] (its ``per_device`` chunks of the rows) over the keys and values of
    all its rows' tokens, all-gathered: chunk by chunk, each over the keys up to the last chunk that can precede
    it (the first half of the row for the first zigzag chunk, which lies there)."""
    keys, values, key_segments, query_slots = _gathered_keys(k, v, segment_ids, sequence, per_device)
    chunk = q.shape[1] // per_device
    outs = []
    for place in range(per_device):
        visible = keys.shape[1] // 2 if (per_device, place) == (2, 0) else keys.shape[1]
        part = slice(place * chunk, (place + 1) * chunk)
        outs.append(_attend_chunk(q[:, part], segment_ids[:, part], keys[:, :visible], values[:, :visible],
                                  key_segments[:, :visible], query_slots[part], impl=impl))
    return jnp.concatenate(outs, axis=1)


def _attend_chunk(q, segment_ids, keys, values, key_segments, query_slots, *, impl):
    """Queries q [b, c, h, Dh] at the consecutive slots ``query_slots`` int32[c] of their rows over the rows' first
    keys [b, L, K, Dh] (slots 0..L-1): on the XLA path in query chunks recomputed in the backward; with the
    kernels as one flash call at ``q_offset = query_slots[0]``, which computes only the key blocks up to each
    query block's diagonal."""
    if impl == "xla":
        return chunked_query_attention(q, segment_ids, keys, values, key_segments, query_slots,
                                       query_chunk=sequence_query_chunk(keys.shape[1]))
    flash = pallas_op("attention.ops", "flash_attention", impl)
    return flash(q, keys, values, segment_ids=segment_ids, kv_segment_ids=key_segments, causal=True,
                 q_offset=query_slots[0], impl=impl)


def chunked_query_attention(q, segment_ids, keys, values, key_segments, query_slots, *, query_chunk: int):
    """Self-attention of queries at the given slots of their rows over the rows' tokens, chunk by chunk.

    q [B, T, H, Dh], segment_ids int32[B, T], keys/values [B, S, K, Dh], key_segments int32[B, S] (slots 0..S-1),
    query_slots int32[T] -> [B, T, H, Dh]. Query chunks of ``query_chunk`` (T is zero-padded to a multiple)
    run one at a time under ``jax.checkpoint``: only one chunk's [H, query_chunk, S] scores exist at once, in the
    forward and in the backward.
    """
    b, t, h, dh = q.shape
    size = min(query_chunk, t)
    num_chunks = -(-t // size)
    pad = num_chunks * size - t

    def attend(chunk):
        q_part, segments, slots = chunk
        causal = jnp.arange(keys.shape[1])[None, :] <= slots[:, None]
        same = (segments[:, :, None] == key_segments[:, None, :]) & (segments[:, :, None] > 0)
        return grouped_attention(q_part, keys, values, causal[None] & same)

    q_parts = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, num_chunks, size, h, dh).swapaxes(0, 1)
    segment_parts = jnp.pad(segment_ids, ((0, 0), (0, pad))).reshape(b, num_chunks, size).swapaxes(0, 1)
    slot_parts = jnp.pad(query_slots, (0, pad)).reshape(num_chunks, size)
    out = jax.lax.map(jax.checkpoint(attend), (q_parts, segment_parts, slot_parts))
    return out.swapaxes(0, 1).reshape(b, num_chunks * size, h, dh)[:, :t]


def cached_attention(q, keys, values, lengths, num_new_valid, impl: str):
    """Queries at slots ``lengths + t`` over the updated cache keys/values [B,S,K,Dh] -> [B,T,H,Dh].

    With the Pallas kernels, ``decode_attention(.., lengths + T)`` puts query ``t`` at slot ``lengths[b] + t``
    and lets it see slots ``<= lengths[b] + t``: exactly the mask below for a valid token (a padding token,
    whose output nothing reads, sees the slots before it too).
    """
    t = q.shape[1]
    if impl != "xla":
        decode = pallas_op("attention.ops", "decode_attention", impl)
        tokens, heads = _kernel_specs(q, keys, rows="rows")
        rows = P(tokens[0])
        return on_shards(lambda q, k, v, ends: decode(q, k, v, ends, impl=impl), (heads, heads, heads, rows), heads,
                         q, keys, values, lengths + t)
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
    split_length: bool = False  # no cache: the tokens may be split over ``sequence`` (see the module docstring)

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
            split = sequence_layout.sequence_split(cfg, x.shape[1]) if self.split_length else ((), 1)
            out = self_attention(q, k, v, segment_ids, cfg.kernel_impl, split=split, rows=row_axis(self.split_length))
            new_cache = None
        else:
            keys = write_cache(layer_cache["k"], k, lengths)
            values = write_cache(layer_cache["v"], v, lengths)
            if self.prefill:
                out = self_attention(q, k, v, segment_ids, cfg.kernel_impl, rows=row_axis(False))
            else:
                valid = jnp.sum(segment_ids > 0, axis=1)
                out = cached_attention(q, keys, values, lengths, valid, cfg.kernel_impl)
            new_cache = {"k": keys, "v": values}
        return jnp.einsum("bthk,hkd->btd", out, wo), new_cache
