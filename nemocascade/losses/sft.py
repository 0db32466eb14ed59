"""Supervised fine-tuning loss: masked token cross-entropy with an optional z-loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _checks
from .aggregation import masked_mean
from .logprobs import token_logprobs_and_logsumexp


def sft_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array, *, z_loss: float = 0.0,
             chunk_size: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy over the masked tokens, plus ``z_loss`` times the mean squared log-partition.

    ``loss = sum_{b,t} m (-lp) / sum m  +  z_loss * sum_{b,t} m lse^2 / sum m`` with
    ``lp = log softmax(logits)[targets]`` and ``lse = logsumexp(logits)`` per position (float32).

    Args:
      logits: ``[B, T, V]`` float logits (bf16 fine; computed in float32).
      targets: ``[B, T]`` integer next-token ids (ids outside ``[0, V)`` are allowed where ``mask == 0``).
      mask: ``[B, T]`` 1 on tokens that count (e.g. assistant tokens), 0 elsewhere; bool or numeric.
        Positions with ``mask == 0`` (finite logits, any target id) never affect the loss, and their
        logits get a zero gradient. An empty mask gives loss 0 and zero gradients.
      z_loss: non-negative weight of the z-loss (PaLM-style logit-drift regulariser).
      chunk_size: passed to ``token_logprobs_and_logsumexp`` (chunk the sequence axis to bound memory).

    Returns:
      ``(loss, aux)``: scalar float32 loss; ``aux`` has ``cross_entropy`` (the first term),
      ``logsumexp_squared`` (mean ``lse^2``, before weighting) and ``num_tokens`` (``sum mask``).
    """
    mask = _checks.mask_array("mask", mask)
    targets = _checks.as_array("targets", targets)
    _checks.same_shape("targets", targets, mask=mask)
    _checks.hyper_parameter("z_loss", z_loss, minimum=0.0)
    logprobs, logsumexp = token_logprobs_and_logsumexp(logits, targets, chunk_size=chunk_size)
    return sft_loss_from_logprobs(logprobs, logsumexp, mask, z_loss=z_loss)


def sft_loss_from_logprobs(logprobs: jax.Array, logsumexp: jax.Array, mask: jax.Array, *,
                           z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``sft_loss`` from the target log-probs and log-partitions (``[B, T]`` float each), e.g. as
    ``head_logprobs_and_logsumexp`` computes them without materialising the logits; same loss and aux."""
    mask = _checks.mask_array("mask", mask)
    logprobs = _checks.floating("logprobs", logprobs)
    logsumexp = _checks.floating("logsumexp", logsumexp)
    _checks.same_shape("logprobs", logprobs, logsumexp=logsumexp, mask=mask)
    _checks.hyper_parameter("z_loss", z_loss, minimum=0.0)
    cross_entropy = masked_mean(-logprobs, mask)
    logsumexp_squared = masked_mean(jnp.square(logsumexp), mask)
    loss = cross_entropy + z_loss * logsumexp_squared
    aux = {"cross_entropy": cross_entropy, "logsumexp_squared": logsumexp_squared,
           "num_tokens": jnp.sum(mask.astype(loss.dtype))}
    return loss, aux
