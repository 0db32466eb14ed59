"""Per-token log-probabilities of target tokens from logits, optionally chunked over the sequence axis.

``lp[..., t] = logits[..., t, y_t] - logsumexp_v logits[..., t, v]`` computed in (at least) float32 with
the max-shifted log-sum-exp, so bf16 logits of large magnitude are handled exactly as their f32 values.

The plain path upcasts the whole ``[..., T, V]`` block. With ``chunk_size=C`` the sequence axis is
walked in chunks of ``C`` positions by a ``lax.fori_loop``, so only a ``[..., C, V]`` float32 slice is
live at a time, and a custom VJP walks the same chunks backwards (recomputing the softmax per chunk)
and writes the ``logits``-dtype gradient in place: neither pass holds a full float32 copy of the logits.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from . import _checks


def _chunk_logprobs_and_logsumexp(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log-prob of ``targets``, logsumexp) over the last axis of ``logits``, in >= float32.

    Targets outside ``[0, V)`` (e.g. -100 padding) get a NaN log-prob, so using one unmasked is loud;
    every loss in this package masks those positions out before any arithmetic.
    """
    vocab = logits.shape[-1]
    values = logits.astype(_checks.compute_dtype(logits))
    # Shift by the (constant) max and never add it back before subtracting: for logits of magnitude M this
    # keeps lp accurate to float32 epsilon instead of epsilon * M.
    top = jax.lax.stop_gradient(jnp.max(values, axis=-1, keepdims=True))
    shifted = values - top
    log_normaliser = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))
    valid = (targets >= 0) & (targets < vocab)
    index = jnp.where(valid, targets, 0)
    picked = jnp.take_along_axis(shifted, index[..., None], axis=-1)[..., 0]
    logprobs = jnp.where(valid, picked - log_normaliser, jnp.nan)
    return logprobs, top[..., 0] + log_normaliser


def _chunk_start(step: jax.Array, chunk_size: int, length: int) -> jax.Array:
    """First position of chunk ``step``; the last chunk is shifted left to end at ``length`` (it may overlap
    the one before it, which only recomputes identical values)."""
    return jnp.minimum(step * chunk_size, length - chunk_size)


def _chunk_count(chunk_size: int, length: int) -> int:
    return -(-length // chunk_size)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _chunked_logprobs_and_logsumexp(logits: jax.Array, targets: jax.Array,
                                    chunk_size: int) -> tuple[jax.Array, jax.Array]:
    """Chunked twin of ``_chunk_logprobs_and_logsumexp``; requires ``1 <= chunk_size <= T``."""
    return _chunked_forward(logits, targets, chunk_size)


def _chunked_forward(logits, targets, chunk_size):
    length = targets.shape[-1]
    time_axis = targets.ndim - 1
    dtype = _checks.compute_dtype(logits)

    def body(step, carry):
        logprobs, logsumexp = carry
        start = _chunk_start(step, chunk_size, length)
        logits_chunk = lax.dynamic_slice_in_dim(logits, start, chunk_size, axis=time_axis)
        targets_chunk = lax.dynamic_slice_in_dim(targets, start, chunk_size, axis=time_axis)
        lp_chunk, lse_chunk = _chunk_logprobs_and_logsumexp(logits_chunk, targets_chunk)
        return (lax.dynamic_update_slice_in_dim(logprobs, lp_chunk, start, axis=time_axis),
                lax.dynamic_update_slice_in_dim(logsumexp, lse_chunk, start, axis=time_axis))

    empty = jnp.zeros(targets.shape, dtype)
    return lax.fori_loop(0, _chunk_count(chunk_size, length), body, (empty, empty))


def _chunked_fwd(logits, targets, chunk_size):
    logprobs, logsumexp = _chunked_forward(logits, targets, chunk_size)
    return (logprobs, logsumexp), (logits, targets, logsumexp)


def _chunked_bwd(chunk_size, residuals, cotangents):
    """d lp_t / d x_v = [v == y_t] - softmax(x)_v and d lse_t / d x_v = softmax(x)_v, one chunk at a time."""
    logits, targets, logsumexp = residuals
    d_logprobs, d_logsumexp = cotangents
    length = targets.shape[-1]
    time_axis = targets.ndim - 1

    def body(step, d_logits):
        start = _chunk_start(step, chunk_size, length)

        def chunk(array):
            return lax.dynamic_slice_in_dim(array, start, chunk_size, axis=time_axis)

        values = chunk(logits).astype(logsumexp.dtype)
        probs = jnp.exp(values - chunk(logsumexp)[..., None])
        one_hot = lax.broadcasted_iota(targets.dtype, values.shape, values.ndim - 1) == chunk(targets)[..., None]
        d_lp = chunk(d_logprobs)[..., None]
        d_chunk = jnp.where(one_hot, d_lp, 0.0) + (chunk(d_logsumexp)[..., None] - d_lp) * probs
        return lax.dynamic_update_slice_in_dim(d_logits, d_chunk.astype(logits.dtype), start, axis=time_axis)

    d_logits = lax.fori_loop(0, _chunk_count(chunk_size, length), body, jnp.zeros_like(logits))
    return d_logits, None


_chunked_logprobs_and_logsumexp.defvjp(_chunked_fwd, _chunked_bwd)


def token_logprobs_and_logsumexp(logits: jax.Array, targets: jax.Array, *,
                                 chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Log-probs of ``targets`` and the log-partition of each position.

    Args:
      logits: ``[..., T, V]`` (typically ``[B, T, V]``) float logits, any float dtype (bf16 is fine).
      targets: ``[..., T]`` integer token ids in ``[0, V)``; ids outside that range (padding such as -100)
        give a NaN log-prob, to be masked out by the caller.
      chunk_size: None for the plain path; an int ``C >= 1`` to walk ``T`` in chunks of ``C`` positions
        (the last chunk is aligned to the end, so ``T`` need not divide by ``C``; ``C >= T`` is one chunk).

    Returns:
      ``(lp, lse)``, both ``[..., T]`` in float32 (float64 for float64 logits under x64):
      ``lse = log sum_v exp(logits[..., v])`` and ``lp = logits[..., y] - lse``. Differentiable in
      ``logits`` on both paths.
    """
    logits = _checks.floating("logits", logits)
    targets = _checks.integer("targets", targets)
    if logits.ndim < 2:
        raise ValueError(f"logits: expected shape [..., T, V] with at least 2 axes, got {tuple(logits.shape)}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets: expected shape {tuple(logits.shape[:-1])} (logits.shape[:-1]), "
                         f"got {tuple(targets.shape)}")
    if chunk_size is not None:
        chunk_size = _checks.positive_int("chunk_size", chunk_size)
    if chunk_size is None or targets.shape[-1] == 0:
        return _chunk_logprobs_and_logsumexp(logits, targets)
    return _chunked_logprobs_and_logsumexp(logits, targets, min(chunk_size, targets.shape[-1]))


def token_logprobs(logits: jax.Array, targets: jax.Array, *, chunk_size: int | None = None) -> jax.Array:
    """``lp[..., t] = log softmax(logits[..., t, :])[targets[..., t]]`` as float32 ``[..., T]``.

    ``logits`` is ``[B, T, V]`` (or any ``[..., T, V]``), ``targets`` is ``[B, T]`` integer ids; there is
    no mask (every position is computed; ids outside ``[0, V)`` give NaN). Computed in float32 even for
    bf16 logits. ``chunk_size=C`` keeps only a ``[..., C, V]`` float32 slice live in the forward and
    backward passes (see ``token_logprobs_and_logsumexp``). Works under jit/vmap/grad and on sharded
    inputs.
    """
    return token_logprobs_and_logsumexp(logits, targets, chunk_size=chunk_size)[0]
