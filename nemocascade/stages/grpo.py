"""GRPO (IF-RL, multi-domain RL, long-context RL, code RL): rollouts -> rewards -> group advantages -> grpo_loss.

The rewards are each domain's verifier; a judged domain (``rewards.JUDGED_DOMAINS``: long-context RL's) is scored
by the LLM judge ``rl.judge`` names, against the row's reference answer (``rewards/answer_judge.py``).

Strictly on-policy as in Nemotron-Cascade 2: one update per rollout batch, so the ratio against the
sampler's log-probs is 1 and clipping never binds; no KL term unless ``rl.kl_coef > 0``, which adds
``kl_coef * k3`` per token against the stage's frozen initial params (``rl_common``; metric ``kl``).
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from nemocascade import losses
from nemocascade.stages import policy
from nemocascade.stages.rl_common import RLStage, judged_domains
from nemocascade.stages.rollout_batch import per_token


def make_grpo_loss(cfg, rl: ml_collections.ConfigDict):
    """``loss_fn(params, batch, rng)``; batch adds ``advantages`` f32[rows, L] (each token its sample's) to the
    rollout batch, and ``ref_logprobs`` f32[rows, L] when ``rl.kl_coef > 0`` (then ``metrics["kl"]`` = masked mean
    k3 KL to it). Responses are told apart by ``segment_ids`` (packed rows hold several)."""
    use_reference = rl.kl_coef > 0

    def loss_fn(params, batch, rng):
        del rng
        logprobs, aux = policy.token_logprobs(params, cfg, batch, temperature=rl.temperature)
        loss, loss_aux = losses.grpo_loss(logprobs, batch["rollout_logprobs"], batch["advantages"], batch["mask"],
                                          clip_eps_low=rl.clip_eps_low, clip_eps_high=rl.clip_eps_high,
                                          aggregation=rl.aggregation,
                                          ref_logprobs=batch["ref_logprobs"] if use_reference else None,
                                          kl_coef=rl.kl_coef, segment_ids=batch["segment_ids"])
        total = loss + aux["moe_aux_loss"] + aux["router_z_loss"]
        metrics = {"pg_loss": loss, **policy.moe_metrics(aux),
                   **{("kl" if k == "ref_kl" else k): v for k, v in loss_aux.items() if jnp.ndim(v) == 0}}
        return total, metrics
    return loss_fn


def group_filter_weights(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """DAPO dynamic filtering: f32[N] 0 for rows of groups whose rewards are all equal, else 1."""
    groups = rewards.reshape(-1, group_size)
    informative = groups.max(axis=1) > groups.min(axis=1)
    return np.repeat(informative, group_size).astype(np.float32)


class GRPOStage(RLStage):
    """Rewards from the per-domain verifiers; advantages ``(r - mean_group) / std_group``."""

    supports_kl = True

    def loss_fn(self):
        return make_grpo_loss(self.ctx.model_cfg, self.config.rl)

    def sample_weights(self, samples, rewards):
        """DAPO dynamic filtering (``rl.filter_uniform_groups``): the groups whose rewards are all equal are dropped."""
        del samples
        rl = self.config.rl
        if not rl.filter_uniform_groups:
            return None, {"kept_group_fraction": 1.0}
        weights = group_filter_weights(rewards, rl.num_samples)
        return weights, {"kept_group_fraction": float(weights.mean())}

    def extra_batch(self, batch, samples, rewards):
        rl = self.config.rl
        advantages = np.asarray(losses.group_advantages(jnp.asarray(rewards), rl.num_samples,
                                                        normalize_std=rl.normalize_std))
        return {"advantages": per_token(advantages.astype(np.float32), batch["sample_index"])}, {}

    def run(self, *, initial_params=None):
        """Training; a stage with judged domains (toy prompts) also scores its judge's mean reward of greedy
        held-out answers before and after (``ctx.evaluation["judge_score"]``)."""
        judged = judged_domains(self.config.rl.domains)
        if judged:
            return self.run_scored("judge_score", "judge score", judged, initial_params=initial_params)
        return super().run(initial_params=initial_params)


def run(config, workdir, *, initial_params=None):
    return GRPOStage(config, workdir).run(initial_params=initial_params)
