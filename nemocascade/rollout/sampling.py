"""Token sampling from logits: temperature, top-k, top-p, and the log-probs the RL losses compare against.

The log-prob recorded for a sampled token is ``log softmax(logits / temperature)[token]``, taken
*before* top-k / top-p truncation. That is the quantity a trainer recomputes from a full forward pass
(at the same temperature), so GRPO/MOPD see ratio 1 on fresh rollouts. Truncation changes which tokens
can be drawn, not the recorded log-prob. With ``temperature == 0`` decoding is greedy and the recorded
log-prob is ``log softmax(logits)[token]`` (temperature 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Sets logits outside the top-k / nucleus (top-p) set to -inf.

    Args:
      logits: f32[..., V] (already divided by the temperature).
      top_k: keep the k largest (0 = no limit). Ties at the k-th value are all kept.
      top_p: keep the smallest set of most likely tokens whose probability mass reaches ``top_p``
        (the token that crosses the threshold is kept; 1.0 = no limit).
    Returns:
      f32[..., V] with the dropped entries at -inf; at least one token always survives.
    """
    neg_inf = jnp.asarray(-jnp.inf, logits.dtype)
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg_inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep_sorted = mass_before < top_p
        # The smallest logit still kept: every logit >= it survives (ties included).
        threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg_inf, logits)
    return logits


def sample_tokens(rng: jax.Array, logits: jax.Array, *, temperature: float, top_k: int = 0,
                  top_p: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Draws one token per row.

    Args:
      rng: PRNG key.
      logits: f32[N, V] next-token logits.
      temperature: > 0 samples from softmax(logits / temperature); 0 is greedy (argmax).
    Returns:
      (tokens int32[N], logprobs f32[N]) with logprobs as described in the module docstring.
    """
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        scaled = logits
    else:
        scaled = logits / temperature
        filtered = filter_logits(scaled, top_k=top_k, top_p=top_p)
        tokens = jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)
    logprobs = jax.nn.log_softmax(scaled, axis=-1)
    return tokens, jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
