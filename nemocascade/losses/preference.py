"""Pairwise preference losses: Bradley-Terry reward-model training and DPO."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _checks


def bradley_terry_loss(chosen_rewards: jax.Array, rejected_rewards: jax.Array, *,
                       margin: float | jax.Array = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Bradley-Terry loss ``mean_b -log sigmoid(chosen_b - rejected_b - margin_b)``.

    Args:
      chosen_rewards: ``[B]`` scalar rewards of the preferred responses (float, B >= 1).
      rejected_rewards: ``[B]`` rewards of the dispreferred responses.
      margin: a number or a ``[B]`` array of required reward gaps (Llama-2 style); 0 is plain BT.
      There is no mask: every pair counts.

    Returns:
      ``(loss, aux)``: scalar float32 loss; ``aux``: ``accuracy`` (fraction with chosen > rejected),
      ``margin_mean`` (mean ``chosen - rejected``).
    """
    chosen = _checks.floating("chosen_rewards", chosen_rewards)
    rejected = _checks.floating("rejected_rewards", rejected_rewards)
    _checks.ndim("chosen_rewards", chosen, 1, "[B]")
    _checks.same_shape("chosen_rewards", chosen, rejected_rewards=rejected)
    if chosen.shape[0] == 0:
        raise ValueError("chosen_rewards: expected at least one pair, got shape (0,)")
    margin = _checks.as_array("margin", margin)
    if not (jnp.issubdtype(margin.dtype, jnp.floating) or jnp.issubdtype(margin.dtype, jnp.integer)):
        raise TypeError(f"margin: expected a real number or array, got dtype {margin.dtype}")
    if margin.shape not in ((), chosen.shape):
        raise ValueError(f"margin: expected a scalar or shape {tuple(chosen.shape)} [B], got {tuple(margin.shape)}")
    dtype = _checks.compute_dtype(chosen, rejected)
    gap = chosen.astype(dtype) - rejected.astype(dtype)
    loss = jnp.mean(-jax.nn.log_sigmoid(gap - margin.astype(dtype)))
    aux = {"accuracy": jnp.mean((gap > 0).astype(dtype)), "margin_mean": jnp.mean(gap)}
    return loss, jax.lax.stop_gradient(aux)


def dpo_loss(policy_chosen_logprobs: jax.Array, policy_rejected_logprobs: jax.Array,
             ref_chosen_logprobs: jax.Array, ref_rejected_logprobs: jax.Array, *,
             beta: float = 0.1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Direct Preference Optimisation: Bradley-Terry on the implicit rewards ``beta * (policy - ref)``.

    ``loss = mean_b -log sigmoid(beta * [(pc_b - rc_b) - (pr_b - rr_b)])`` with sequence log-probs
    (sums of the response's token log-probs) ``pc/pr`` under the policy and ``rc/rr`` under the frozen
    reference (treated as constants).

    Args:
      policy_chosen_logprobs, policy_rejected_logprobs: ``[B]`` float sequence log-probs, policy.
      ref_chosen_logprobs, ref_rejected_logprobs: ``[B]`` float sequence log-probs, reference.
      beta: positive inverse temperature.

    Returns:
      ``(loss, aux)``: scalar float32 loss; ``aux``: ``accuracy`` and ``margin_mean`` of the implicit
      rewards (as in ``bradley_terry_loss``), ``chosen_reward_mean``, ``rejected_reward_mean``.
    """
    _checks.hyper_parameter("beta", beta, minimum=0.0, strict_minimum=True)
    arrays = {"policy_chosen_logprobs": policy_chosen_logprobs,
              "policy_rejected_logprobs": policy_rejected_logprobs,
              "ref_chosen_logprobs": ref_chosen_logprobs, "ref_rejected_logprobs": ref_rejected_logprobs}
    arrays = {name: _checks.floating(name, array) for name, array in arrays.items()}
    first = arrays["policy_chosen_logprobs"]
    _checks.ndim("policy_chosen_logprobs", first, 1, "[B]")
    _checks.same_shape("policy_chosen_logprobs", first, **arrays)
    dtype = _checks.compute_dtype(*arrays.values())
    pc, pr, rc, rr = (arrays[name].astype(dtype) for name in arrays)
    chosen_rewards = beta * (pc - jax.lax.stop_gradient(rc))
    rejected_rewards = beta * (pr - jax.lax.stop_gradient(rr))
    loss, aux = bradley_terry_loss(chosen_rewards, rejected_rewards)
    aux = {**aux, "chosen_reward_mean": jnp.mean(chosen_rewards), "rejected_reward_mean": jnp.mean(rejected_rewards)}
    return loss, jax.lax.stop_gradient(aux)
