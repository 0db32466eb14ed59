"""Multi-domain On-Policy Distillation (Nemotron-Cascade 2): token-level reverse-KL advantages from a teacher."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _checks
from ._token_inputs import token_inputs
from .aggregation import aggregate, check_aggregation, masked_mean


def mopd_advantages(teacher_logprobs: jax.Array, student_logprobs: jax.Array, mask: jax.Array) -> jax.Array:
    """MOPD token advantage ``A_t = stop_gradient(teacher_t - student_t) * mask_t``.

    Args:
      teacher_logprobs: ``[B, T]`` log-probs of the sampled tokens under the domain's teacher.
      student_logprobs: ``[B, T]`` log-probs of the same tokens under the student (the sampler).
      mask: ``[B, T]`` 1 on response tokens, else 0; the result is exactly 0 there (even for inf/NaN inputs).

    Returns:
      ``[B, T]`` float32 advantages, no gradient. Their masked mean is minus the sampled estimate of the
      reverse KL ``KL(student || teacher)``.
    """
    mask, masked = token_inputs(mask, teacher_logprobs=teacher_logprobs, student_logprobs=student_logprobs)
    gap = masked["teacher_logprobs"] - masked["student_logprobs"]
    return jax.lax.stop_gradient(gap * mask.astype(gap.dtype))


def mopd_loss(logprobs: jax.Array, rollout_logprobs: jax.Array, teacher_logprobs: jax.Array, mask: jax.Array, *,
              is_low: float = 0.5, is_high: float = 2.0,
              aggregation: str = "token_mean",
              segment_ids: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MOPD policy-gradient surrogate with a hard-gated importance weight.

    Per masked token::

        A_t = stop_gradient(teacher_t - rollout_t)
        r_t = exp(logprobs_t - rollout_t)
        w_t = stop_gradient(r_t) if is_low <= r_t <= is_high else 0     (gate, not clamp)
        l_t = -w_t * A_t * logprobs_t

    reduced by ``aggregation`` (``"token_mean"`` default; the paper's Eq. 4 is ``"seq_mean_token_mean"``).
    The gradient is ``-w_t A_t grad(logprobs_t)``: the teacher pulls up tokens it prefers and the weight
    corrects for trainer/sampler mismatch, dropping tokens whose mismatch is outside ``[is_low, is_high]``.
    The loss value itself is a surrogate (only its gradient is meaningful).

    Args:
      logprobs: ``[B, T]`` log-probs of the sampled tokens under the policy being trained (differentiated).
      rollout_logprobs: ``[B, T]`` log-probs the sampler reported for those tokens.
      teacher_logprobs: ``[B, T]`` the teacher's log-probs for those tokens.
      mask: ``[B, T]`` 1 on response tokens, 0 elsewhere; masked positions are ignored (even inf/NaN);
        empty rows / an empty batch give a finite loss.
      is_low, is_high: the importance-weight window, ``0 <= is_low <= is_high``.
      aggregation: ``"token_mean"``, ``"seq_mean_token_mean"`` or ``"seq_mean_token_sum_norm"``.
      segment_ids: optional int ``[B, T]`` of packed rows (several responses per row, ``1, 2, ...``, 0 =
        padding): ``seq_mean_token_mean`` then weighs each response, not each row (see ``aggregation``).

    Returns:
      ``(loss, aux)``: scalar float32 loss; ``aux`` (masked token means): ``advantage_mean`` (= minus the
      sampled reverse KL), ``gated_fraction`` (fraction of tokens whose weight was set to 0),
      ``importance_weight_mean`` (mean ``w_t``), ``num_tokens``.
    """
    check_aggregation(aggregation)
    _checks.hyper_parameter("is_low", is_low, minimum=0.0)
    _checks.hyper_parameter("is_high", is_high, minimum=0.0)
    low, high = _checks.concrete_float(is_low), _checks.concrete_float(is_high)
    if low is not None and high is not None and low > high:
        raise ValueError(f"is_low: expected is_low <= is_high, got is_low={low} > is_high={high}")
    mask, masked = token_inputs(mask, logprobs=logprobs, rollout_logprobs=rollout_logprobs,
                                teacher_logprobs=teacher_logprobs)
    advantages = mopd_advantages(masked["teacher_logprobs"], masked["rollout_logprobs"], mask)
    logprobs = masked["logprobs"]
    ratio = jax.lax.stop_gradient(jnp.exp(logprobs - masked["rollout_logprobs"]))
    kept = (ratio >= is_low) & (ratio <= is_high)
    weights = jnp.where(kept, ratio, 0.0)
    per_token = -weights * advantages * logprobs
    aux = {"advantage_mean": masked_mean(advantages, mask),
           "gated_fraction": masked_mean((~kept).astype(ratio.dtype), mask),
           "importance_weight_mean": masked_mean(weights, mask),
           "num_tokens": jnp.sum(mask.astype(ratio.dtype))}
    return aggregate(per_token, mask, aggregation, segment_ids), jax.lax.stop_gradient(aux)
