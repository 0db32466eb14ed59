"""GRPO: group-relative advantages and the clipped policy-gradient loss (PPO surrogate without a critic)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _checks
from ._token_inputs import token_inputs
from .aggregation import aggregate, check_aggregation, masked_mean


def group_advantages(rewards: jax.Array, group_size: int, *, normalize_std: bool = True,
                     eps: float = 1e-6) -> jax.Array:
    """Group-relative advantages of ``N = prompts * group_size`` samples, groups contiguous.

    ``A_i = r_i - mean_g(r)``, divided by ``std_g(r) + eps`` when ``normalize_std`` (population std,
    ddof=0), where ``g`` is the group of ``group_size`` consecutive samples that contains ``i``. A group
    whose rewards are all equal gets ``A = 0`` exactly (not ``rounding error / eps``).

    Args:
      rewards: ``[N]`` rewards (any real dtype; computed in at least float32).
      group_size: samples per prompt ``G >= 1``; ``N`` must be a multiple of it.
      normalize_std: divide by the group's std (GRPO); False keeps the mean-centred reward (Dr. GRPO).
      eps: positive constant added to the std.

    Returns:
      ``[N]`` float32 advantages.
    """
    rewards = _checks.as_array("rewards", rewards)
    if not (rewards.dtype == jnp.bool_ or jnp.issubdtype(rewards.dtype, jnp.number)):
        raise TypeError(f"rewards: expected a numeric array, got dtype {rewards.dtype}")
    _checks.ndim("rewards", rewards, 1, "[N]")
    group_size = _checks.positive_int("group_size", group_size)
    if rewards.shape[0] % group_size:
        raise ValueError(f"rewards: length {rewards.shape[0]} is not a multiple of group_size={group_size}")
    if not isinstance(normalize_std, bool):
        raise TypeError(f"normalize_std: expected a bool, got {type(normalize_std).__name__}")
    _checks.hyper_parameter("eps", eps, minimum=0.0, strict_minimum=True)
    groups = rewards.astype(_checks.compute_dtype(rewards)).reshape(-1, group_size)
    centred = groups - jnp.mean(groups, axis=1, keepdims=True)
    if normalize_std:
        centred = centred / (jnp.std(groups, axis=1, keepdims=True) + eps)
    # The float mean of equal values can miss them by an ulp, which the std division would blow up to
    # O(ulp / eps): pin uniform groups to exactly 0.
    uniform = jnp.max(groups, axis=1, keepdims=True) == jnp.min(groups, axis=1, keepdims=True)
    return jnp.where(uniform, jnp.zeros((), centred.dtype), centred).reshape(rewards.shape)


def _broadcast_advantages(advantages: jax.Array, mask: jax.Array) -> jax.Array:
    """``advantages`` ``[B]`` (per sequence) or ``[B, T]`` (per token) as ``[B, T]``."""
    advantages = _checks.floating("advantages", advantages)
    if advantages.shape == mask.shape[:1] and mask.ndim == 2:
        return jnp.broadcast_to(advantages[:, None], mask.shape)
    if advantages.shape != mask.shape:
        raise ValueError(f"advantages: expected shape {tuple(mask.shape[:1])} [B] or {tuple(mask.shape)} [B, T] "
                         f"(from mask), got {tuple(advantages.shape)}")
    return advantages


def grpo_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array, mask: jax.Array, *,
              clip_eps_low: float = 0.2, clip_eps_high: float = 0.2, aggregation: str = "token_mean",
              ref_logprobs: jax.Array | None = None, kl_coef: float = 0.0,
              segment_ids: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped policy-gradient loss of GRPO / DAPO / Dr. GRPO.

    Per masked token, with ``ratio = exp(logprobs - old_logprobs)``::

        l_t = -min(ratio * A, clip(ratio, 1 - clip_eps_low, 1 + clip_eps_high) * A)
              + kl_coef * k3,   k3 = exp(ref - lp) - (ref - lp) - 1   (only when ref_logprobs is given)

    The min is evaluated as "clipped iff (A > 0 and ratio > 1 + eps_high) or (A < 0 and ratio < 1 - eps_low)",
    which has the same value and gives clipped tokens an exactly zero gradient and unclipped tokens the
    gradient ``-A * ratio * grad(lp)``. Strictly on-policy (``old_logprobs == logprobs``, ratio 1) this is
    the REINFORCE gradient ``-A * grad(lp)``, aggregated the same way. ``l_t`` is reduced by
    ``aggregation`` (``"token_mean"``, ``"seq_mean_token_mean"`` or ``"seq_mean_token_sum_norm"``; see
    ``nemocascade.losses.aggregation``).

    Args:
      logprobs: ``[B, T]`` float log-probs of the sampled tokens under the policy being trained
        (differentiate through this one).
      old_logprobs: ``[B, T]`` log-probs under the policy that sampled (treated as constants).
      advantages: ``[B]`` per sequence (broadcast over tokens) or ``[B, T]`` per token.
      mask: ``[B, T]`` 1 on response tokens, 0 on prompt/padding; masked positions of every input are
        ignored (even inf/NaN). Empty rows / an empty batch give a finite loss (0 for an empty batch).
      clip_eps_low, clip_eps_high: non-negative clip range (DAPO's clip-higher uses eps_high > eps_low).
      aggregation: how per-token losses are reduced to a scalar.
      ref_logprobs: optional ``[B, T]`` reference-policy log-probs for the k3 KL penalty.
      kl_coef: non-negative KL weight; a positive value needs ``ref_logprobs``.
      segment_ids: optional int ``[B, T]`` of packed rows (several responses per row, ``1, 2, ...``, 0 =
        padding): ``seq_mean_token_mean`` then weighs each response, not each row (see ``aggregation``);
        give per-token ``advantages`` for such rows.

    Returns:
      ``(loss, aux)``: scalar float32 loss; ``aux`` (masked token means, all scalars): ``clip_fraction``,
      ``ratio_mean``, ``approx_kl`` (``ratio - 1 - log ratio``, the k3 estimate of KL(old || new)),
      ``advantage_mean``, ``num_tokens``, and ``ref_kl`` (mean k3) when ``ref_logprobs`` is given.
    """
    check_aggregation(aggregation)
    _checks.hyper_parameter("clip_eps_low", clip_eps_low, minimum=0.0)
    _checks.hyper_parameter("clip_eps_high", clip_eps_high, minimum=0.0)
    _checks.hyper_parameter("kl_coef", kl_coef, minimum=0.0)
    if ref_logprobs is None and _checks.concrete_float(kl_coef) != 0.0:
        raise ValueError(f"kl_coef: a non-zero (or traced) KL coefficient needs ref_logprobs, got {kl_coef}")
    mask = _checks.mask_array("mask", mask)
    _checks.ndim("mask", mask, 2, "[B, T]")
    mask, masked = token_inputs(mask, logprobs=logprobs, old_logprobs=old_logprobs,
                                advantages=_broadcast_advantages(advantages, mask), ref_logprobs=ref_logprobs)
    logprobs, advantages = masked["logprobs"], masked["advantages"]
    log_ratio = logprobs - jax.lax.stop_gradient(masked["old_logprobs"])
    ratio = jnp.exp(log_ratio)
    clipped = ((advantages > 0) & (ratio > 1.0 + clip_eps_high)) | ((advantages < 0) & (ratio < 1.0 - clip_eps_low))
    clipped_ratio = jax.lax.stop_gradient(jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high))
    per_token = -jnp.where(clipped, clipped_ratio, ratio) * advantages
    aux = {"clip_fraction": masked_mean(clipped.astype(ratio.dtype), mask),
           "ratio_mean": masked_mean(ratio, mask),
           "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask),
           "advantage_mean": masked_mean(advantages, mask),
           "num_tokens": jnp.sum(mask.astype(ratio.dtype))}
    if masked["ref_logprobs"] is not None:
        ref_minus_policy = jax.lax.stop_gradient(masked["ref_logprobs"]) - logprobs
        k3 = jnp.exp(ref_minus_policy) - ref_minus_policy - 1.0
        per_token = per_token + kl_coef * k3
        aux["ref_kl"] = masked_mean(k3, mask)
    aux = jax.lax.stop_gradient(aux)
    return aggregate(per_token, mask, aggregation, segment_ids), aux
