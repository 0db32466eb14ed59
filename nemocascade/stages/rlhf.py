"""RLHF: the policy's rollouts scored by a trained reward model, then the GRPO update.

Everything but the rewards is ``GRPOStage``: prompts (by default the toy ``chat`` domain, whose preference
pairs the reward model was trained on) -> ``rl.num_samples`` rollouts each -> rewards -> group advantages
``(r - mean_group) / std_group`` (``rl.normalize_std=False`` keeps ``r - mean_group``) -> ``grpo_loss``.
The rewards are the raw scores f32[N] (unbounded, higher is better) of the reward model saved by a
``reward_model`` stage in ``rl.reward_model`` (a checkpoint directory; a cascade fills it with the latest
``reward_model`` stage of its ledger), applied to each prompt + final answer (``RewardModelFn``: the reasoning
block stripped, one non-thinking assistant turn, the sequence's last ``data.seq_len`` tokens of the reward
model's own config).

Evaluation (``ctx.evaluation``, kept in the cascade's ledger): the reward model's mean score of greedy
answers to ``eval.num_examples`` held-out prompts of each toy domain in ``rl.domains``, for the starting
params (when given) and the final ones. The paper's RLHF uses a generative pairwise judge (RECIPE.md); the
Bradley-Terry model stands in for it.
"""
from __future__ import annotations

import os

import jax
import ml_collections

from nemocascade import data as data_lib
from nemocascade.checkpoint import Checkpointer
from nemocascade.rewards.reward_model import RewardModelFn
from nemocascade.stages import evaluate
from nemocascade.stages.grpo import GRPOStage


def check_reward_model_dir(directory: str) -> None:
    """Raises a ValueError naming ``rl.reward_model`` unless ``directory`` holds a finished checkpoint."""
    hint = ("RLHF needs the checkpoint directory of a reward_model stage (in a cascade, put a reward_model "
            "stage before the rlhf stage in config.order)")
    if not directory:
        raise ValueError(f"rl.reward_model is empty: {hint}")
    if not os.path.isdir(directory):
        raise ValueError(f"rl.reward_model={directory!r} is not a directory: {hint}")
    checkpointer = Checkpointer(directory, async_save=False)
    try:
        latest = checkpointer.latest_step()
    finally:
        checkpointer.close()
    if latest is None:
        raise ValueError(f"rl.reward_model={directory!r} holds no finished checkpoint: {hint}")


class RLHFStage(GRPOStage):
    """``GRPOStage`` whose reward fn, for every domain of ``rl.domains``, is the reward model."""

    def make_reward_fns(self) -> dict:
        rl = self.config.rl
        check_reward_model_dir(rl.reward_model)
        scorer = RewardModelFn.from_checkpoint(rl.reward_model, mesh=self.ctx.mesh,
                                               batch_size=rl.prompts_per_step * rl.num_samples)
        return {domain: scorer for domain in sorted(set(rl.domains))}

    def heldout_scores(self, params) -> dict[str, dict]:
        """``{domain: {"mean_reward", "num_examples"}}``: the reward model's mean score of greedy answers
        to held-out toy prompts ({} when the prompts come from ``rl.jsonl``)."""
        if self.config.rl.jsonl:
            return {}
        ev = self.config.eval
        scores = {}
        for domain, reward_fn in self.reward_fns.items():
            examples = data_lib.toy_examples(domain, "heldout", ev.num_examples, seed=self.config.seed)
            result = evaluate.evaluate_domain(params, self.ctx.model_cfg, self.tokenizer, examples, domain=domain,
                                              max_new_tokens=ev.max_new_tokens, thinking=self.config.data.thinking,
                                              mesh=self.ctx.mesh, reward_fn=reward_fn)
            scores[domain] = {"mean_reward": result["mean_reward"], "num_examples": result["num_examples"]}
        return scores

    def run(self, *, initial_params=None):
        before = self.heldout_scores(initial_params) if initial_params is not None else {}
        ctx, state = super().run(initial_params=initial_params)
        after = self.heldout_scores(state.params)
        if after:
            ctx.evaluation = {"reward_model_score": {
                d: {"before": before[d]["mean_reward"] if d in before else None,
                    "after": after[d]["mean_reward"], "num_examples": after[d]["num_examples"]} for d in after}}
            for domain, result in ctx.evaluation["reward_model_score"].items():
                start = "n/a" if result["before"] is None else f"{result['before']:.3f}"
                if jax.process_index() == 0:
                    print(f"[{ctx.name}] held-out {domain}: reward-model score {start} -> {result['after']:.3f} "
                          f"({result['num_examples']} prompts)", flush=True)
        return ctx, state


def run(config: ml_collections.ConfigDict, workdir: str, *, initial_params=None):
    return RLHFStage(config, workdir).run(initial_params=initial_params)
