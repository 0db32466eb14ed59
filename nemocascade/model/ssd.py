"""Mamba-2's selective state space recurrence, by chunked state-space duality (SSD) and step by step.

The recurrence, per batch row and head (``h`` is a [P, N] matrix, ``t`` the token):

    h_t = exp(dt_t * a) * h_{t-1} + dt_t * x_t b_t^T        (h_{-1} = the initial state, zeros by default)
    y_t = h_t c_t

with the state dropped (``h_{t-1}`` taken as zeros) before every token where ``starts`` is True, the first
token of a packed segment. A token with ``dt == 0`` adds nothing and leaves the state as it is: that is
how callers make padding invisible.

Shapes: ``B`` batch, ``T`` tokens, ``H`` heads of width ``P``, ``G`` groups of ``B``/``C`` (head ``h`` reads
group ``h // (H // G)``), ``N`` state size. Computation is float32 (float64 for float64 inputs).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_starts(segment_ids: jax.Array) -> jax.Array:
    """bool[B, T]: True where a non-padding segment begins after position 0 (a new packed sequence).

    Padding (segment 0) starts nothing: the state passes through it unchanged (padding has ``dt == 0``),
    so right padding after a prompt leaves the prompt's final state in place for decoding.
    """
    changed = segment_ids[:, 1:] != segment_ids[:, :-1]
    starts = changed & (segment_ids[:, 1:] > 0)
    return jnp.concatenate([jnp.zeros((segment_ids.shape[0], 1), bool), starts], axis=1)


def _ftype(x):
    return jnp.promote_types(x.dtype, jnp.float32)


def ssd_chunked(x, dt, a, b, c, starts, *, chunk_size: int, initial_state=None):
    """The recurrence over all tokens, chunk by chunk (intra-chunk matmuls, a scan over chunk states).

    Args:
      x: [B, T, H, P] inputs.  dt: [B, T, H] step sizes (>= 0).  a: [H] decay rates (< 0).
      b, c: [B, T, G, N] input / output projections.  starts: bool[B, T] state resets (see module).
      chunk_size: tokens per chunk (the last chunk is zero-padded; chunks never exceed T).
      initial_state: [B, H, P, N] state before token 0, or None for zeros.
    Returns:
      (y [B, T, H, P] in x's dtype, final state [B, H, P, N] in float32 / float64).
    """
    bsz, t, h, p = x.shape
    g, n = b.shape[2:]
    r = h // g
    ftype = _ftype(x)
    size = min(chunk_size, t)
    pad = -t % size
    num_chunks = (t + pad) // size

    def chunked(arr, *tail):
        """[B, T, ...] -> [B, chunks, size, *tail], zero-padded in time."""
        arr = jnp.pad(arr, [(0, 0), (0, pad)] + [(0, 0)] * (arr.ndim - 2))
        return arr.reshape(bsz, num_chunks, size, *tail)

    xs = chunked(x.astype(ftype), g, r, p)
    dts = chunked(dt.astype(ftype), g, r)
    bs, cs = chunked(b.astype(ftype), g, n), chunked(c.astype(ftype), g, n)
    starts = chunked(starts.astype(jnp.int32))
    seg = jnp.cumsum(starts.reshape(bsz, -1), axis=1).reshape(starts.shape)   # [B, K, L] segment index
    entering = seg[:, :, 0] - starts[:, :, 0]          # [B, K] index of the segment the incoming state is in
    cum = jnp.cumsum(dts * a.astype(ftype).reshape(g, r), axis=2)            # [B, K, L, G, R] log decay

    # Inside a chunk: y_i = sum_{j <= i, same segment} (c_i . b_j) exp(cum_i - cum_j) dt_j x_j.
    causal = jnp.tril(jnp.ones((size, size), bool))
    same = causal & (seg[:, :, :, None] == seg[:, :, None, :])              # [B, K, i, j]
    log_decay = cum[:, :, :, None] - cum[:, :, None, :]                      # [B, K, i, j, G, R]
    decay = jnp.exp(jnp.where(same[..., None, None], log_decay, -jnp.inf))
    scores = jnp.einsum("bkign,bkjgn->bkijg", cs, bs)
    weights = scores[..., None] * decay * dts[:, :, None]                   # [B, K, i, j, G, R]
    y = jnp.einsum("bkijgr,bkjgrp->bkigrp", weights, xs)

    # What each chunk adds to the state at its end (tokens of the chunk's last segment only).
    last = seg[:, :, -1:]
    to_end = jnp.exp(jnp.where((seg == last)[..., None, None], cum[:, :, -1:] - cum, -jnp.inf))
    added = jnp.einsum("bklgn,bklgr,bklgrp->bkgrpn", bs, to_end * dts, xs)
    carried = jnp.exp(cum[:, :, -1]) * (last[:, :, 0] == entering)[..., None, None]   # [B, K, G, R]

    if initial_state is None:
        state = jnp.zeros((bsz, g, r, p, n), ftype)
    else:
        state = initial_state.astype(ftype).reshape(bsz, g, r, p, n)

    def step(state, inputs):
        carry, new = inputs
        return carry[..., None, None] * state + new, state

    final, incoming = jax.lax.scan(step, state, (jnp.moveaxis(carried, 1, 0), jnp.moveaxis(added, 1, 0)))
    incoming = jnp.moveaxis(incoming, 0, 1)                                  # [B, K, G, R, P, N]

    # The incoming state's share: c_i . (exp(cum_i) h_in) while no reset has happened in the chunk yet.
    from_state = jnp.exp(cum) * (seg == entering[..., None])[..., None, None]
    y = y + jnp.einsum("bklgn,bkgrpn,bklgr->bklgrp", cs, incoming, from_state)
    y = y.reshape(bsz, num_chunks * size, h, p)[:, :t]
    return y.astype(x.dtype), final.reshape(bsz, h, p, n)


def ssd_step(state, x, dt, a, b, c):
    """One token of the recurrence (decoding; never a segment start).

    Args:
      state: [B, H, P, N].  x: [B, H, P].  dt: [B, H].  a: [H].  b, c: [B, G, N].
    Returns:
      (y [B, H, P] in x's dtype, new state [B, H, P, N] in float32 / float64).
    """
    ftype = _ftype(x)
    heads_per_group = x.shape[1] // b.shape[1]
    b = jnp.repeat(b.astype(ftype), heads_per_group, axis=1)                 # [B, H, N]
    c = jnp.repeat(c.astype(ftype), heads_per_group, axis=1)
    dt = dt.astype(ftype)
    decay = jnp.exp(dt * a.astype(ftype))
    state = decay[..., None, None] * state.astype(ftype) + (dt[..., None] * x.astype(ftype))[..., None] * b[:, :, None]
    y = jnp.einsum("bhpn,bhn->bhp", state, c)
    return y.astype(x.dtype), state
