"""Token log-probs straight from hidden states and the LM head, never holding the ``[..., T, V]`` logits.

``head_logprobs_and_logsumexp(hidden, head, targets, chunk_size=C)`` equals
``token_logprobs_and_logsumexp((hidden @ head) / temperature, targets)`` but walks the sequence axis in
chunks of ``C`` positions with a ``lax.scan`` whose body is ``jax.checkpoint``-ed: the forward keeps only
the float32 ``[..., C, V]`` logits of the chunk it is on, and the backward recomputes each chunk's logits
and accumulates the head's gradient across chunks. At long context this is what makes the LM head fit:
for ``T = 262,144`` packed tokens and ``V = 131,072``, the f32 logits alone are 128 GiB per row.

Cost: the head matmul runs twice in the backward instead of once (one recompute, as under remat); under
a sharded batch the head gradient is reduced once per chunk rather than once per step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _checks
from .logprobs import _chunk_logprobs_and_logsumexp


def head_logprobs_and_logsumexp(hidden: jax.Array, head: jax.Array, targets: jax.Array, *, chunk_size: int,
                                temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Log-probs of ``targets`` under ``softmax(hidden @ head / temperature)`` and the log-partitions.

    Args:
      hidden: ``[..., T, D]`` float hidden states (the final-normed output of a decoder).
      head: ``[D, V]`` float LM-head matrix (for tied embeddings, the embedding table transposed).
        The matmul takes ``hidden``'s and ``head``'s dtypes as given and accumulates in float32;
        the logits stay float32 (no rounding to a bf16 compute dtype).
      targets: ``[..., T]`` integer ids in ``[0, V)``; ids outside it (padding) give a NaN log-prob, to be
        masked out by the caller (their gradient is zero when masked with ``jnp.where``).
      chunk_size: ``C >= 1`` positions per chunk; ``T`` need not divide by ``C`` (the last chunk is
        padded with ignored positions).
      temperature: the logits are divided by it (the sampler's temperature), > 0.

    Returns:
      ``(lp, lse)``, both float32 ``[..., T]``, as ``token_logprobs_and_logsumexp`` of the logits.
      Differentiable in ``hidden`` and ``head``.
    """
    hidden = _checks.floating("hidden", hidden)
    head = _checks.floating("head", head)
    targets = _checks.integer("targets", targets)
    chunk_size = _checks.positive_int("chunk_size", chunk_size)
    _checks.hyper_parameter("temperature", temperature, minimum=0.0, strict_minimum=True)
    if hidden.ndim < 2 or hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden: expected shape [..., T, D] with [..., T] = targets.shape "
                         f"{tuple(targets.shape)}, got {tuple(hidden.shape)}")
    if head.ndim != 2 or head.shape[0] != hidden.shape[-1]:
        raise ValueError(f"head: expected shape [D, V] with D = {hidden.shape[-1]} (hidden's last axis), "
                         f"got {tuple(head.shape)}")
    lead, length, width = targets.shape[:-1], targets.shape[-1], hidden.shape[-1]
    num_rows = int(np.prod(lead, dtype=np.int64))
    if length == 0 or num_rows == 0:
        empty = jnp.zeros(targets.shape, jnp.float32)
        return empty, empty
    chunk = min(chunk_size, length)
    chunks = -(-length // chunk)
    pad = chunks * chunk - length
    # [chunks, rows, C, D] and [chunks, rows, C]: the scan walks the leading axis.
    rows = jnp.pad(hidden.reshape(num_rows, length, width), ((0, 0), (0, pad), (0, 0)))
    rows = rows.reshape(num_rows, chunks, chunk, width).swapaxes(0, 1)
    ids = jnp.pad(targets.reshape(num_rows, length), ((0, 0), (0, pad)), constant_values=-1)
    ids = ids.reshape(num_rows, chunks, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def chunk_logprobs(hidden_chunk, ids_chunk):
        logits = jnp.einsum("rcd,dv->rcv", hidden_chunk, head, preferred_element_type=jnp.float32)
        return _chunk_logprobs_and_logsumexp(logits / temperature, ids_chunk)

    _, (logprobs, logsumexp) = lax.scan(lambda carry, xs: (carry, chunk_logprobs(*xs)), None, (rows, ids))

    def unchunk(values):  # [chunks, rows, C] -> [..., T]
        return values.swapaxes(0, 1).reshape(num_rows, chunks * chunk)[:, :length].reshape(*lead, length)

    return unchunk(logprobs), unchunk(logsumexp)
