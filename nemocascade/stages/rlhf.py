"""RLHF: the policy's rollouts scored by a trained reward model, then the GRPO update.

Everything but the rewards is ``GRPOStage``: prompts (by default the toy ``chat`` domain, whose preference
pairs the reward model was trained on) -> ``rl.num_samples`` rollouts each -> rewards -> group advantages
``(r - mean_group) / std_group`` (``rl.normalize_std=False`` keeps ``r - mean_group``) -> ``grpo_loss``.
The rewards are the raw scores f32[N] (unbounded, higher is better) of the reward model saved by a
``reward_model`` stage in ``rl.reward_model`` (a checkpoint directory; a cascade fills it with the latest
``reward_model`` stage of its ledger), applied to each prompt + final answer (``RewardModelFn``: the reasoning
block stripped, one non-thinking assistant turn, the sequence's last ``data.seq_len`` tokens of the reward
model's own config).

With ``rl.judge.checkpoint`` set instead, the rewards come from a generative pairwise judge
(``rewards/pairwise_judge.py``: the paper's RLHF reward, RECIPE.md): every pair of a prompt's rollouts
compared by a language model that writes its verdict, aggregated per rollout.

Evaluation (``ctx.evaluation``, kept in the cascade's ledger) on ``eval.num_examples`` held-out prompts of each
toy domain in ``rl.domains``: with a reward model its mean score of greedy answers, for the starting params
(when given) and the final ones (``reward_model_score``); with a judge the final policy's win rate against the
starting one (``judge_win_rate``): each prompt's two greedy answers are judged in both orders, and the final
answer wins when its summed judge score is higher (a tie counts one half).
"""
from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from nemocascade.checkpoint import Checkpointer
from nemocascade.rewards.pairwise_judge import PairwiseJudgeFn
from nemocascade.rewards.reward_model import RewardModelFn
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
    """``GRPOStage`` whose reward fn, for every domain of ``rl.domains``, is the reward model or the judge."""

    scores_with_models = True

    def make_reward_fns(self) -> dict:
        rl = self.config.rl
        if rl.judge.checkpoint:
            if rl.reward_model:
                raise ValueError(f"rl.reward_model={rl.reward_model!r} and rl.judge.checkpoint="
                                 f"{rl.judge.checkpoint!r} are both set: RLHF scores with one of them")
            scorer = PairwiseJudgeFn.from_settings(rl.judge, default_tokenizer=self.config.data.tokenizer,
                                                   mesh=self.ctx.mesh, seed=self.config.seed)
        else:
            check_reward_model_dir(rl.reward_model)
            scorer = RewardModelFn.from_checkpoint(rl.reward_model, mesh=self.ctx.mesh,
                                                   batch_size=rl.prompts_per_step * rl.num_samples)
        return {domain: scorer for domain in sorted(set(rl.domains))}

    def judge_win_rates(self, starting_answers: dict[str, list[dict]], final_params) -> dict[str, dict]:
        """``{domain: {"win_rate", "num_examples", "parse_failure_fraction"}}``: how often the judge prefers the
        final policy's greedy answer to the starting one's (``starting_answers``: greedy samples per domain,
        taken before training; module docstring)."""
        results = {}
        for domain, before in starting_answers.items():
            after = self.greedy_samples(final_params, self.heldout_examples([domain])[domain])
            n = len(before)
            # group k: (start, final) answers to prompt k; group n + k: the same answers in the other order
            samples = ([{**s, "rollout_group": k} for k, pair in enumerate(zip(before, after)) for s in pair]
                       + [{**s, "rollout_group": n + k} for k, pair in enumerate(zip(after, before)) for s in pair])
            _, infos = self.reward_fns[domain].score(samples)
            score = np.asarray([info.get("judge_score", 0.0) for info in infos]).reshape(2, n, 2)
            final_score = score[0, :, 1] + score[1, :, 0]
            start_score = score[0, :, 0] + score[1, :, 1]
            wins = (final_score > start_score) + 0.5 * (final_score == start_score)
            verdicts = sum(info.get("judge_comparisons", 0) for info in infos) / 2
            failures = sum(info.get("judge_parse_failures", 0) for info in infos) / 2
            results[domain] = {"win_rate": float(wins.mean()), "num_examples": n,
                               "parse_failure_fraction": float(failures / max(verdicts, 1))}
        return results

    def run(self, *, initial_params=None):
        if self.config.rl.judge.checkpoint:
            heldout = self.heldout_examples(sorted(self.reward_fns))
            starting = ({d: self.greedy_samples(initial_params, ex) for d, ex in heldout.items()}
                        if initial_params is not None else {})
            ctx, state = super().run(initial_params=initial_params)
            if starting:
                ctx.evaluation = {"judge_win_rate": self.judge_win_rates(starting, state.params)}
                for domain, result in ctx.evaluation["judge_win_rate"].items():
                    if jax.process_index() == 0:
                        print(f"[{ctx.name}] held-out {domain}: the judge prefers the final policy's answer to "
                              f"the starting one's in {result['win_rate']:.3f} of {result['num_examples']} prompts "
                              f"(verdicts unparsed: {result['parse_failure_fraction']:.3f})", flush=True)
            return ctx, state
        return self.run_scored("reward_model_score", "reward-model score", sorted(self.reward_fns),
                               initial_params=initial_params)


def run(config: ml_collections.ConfigDict, workdir: str, *, initial_params=None):
    return RLHFStage(config, workdir).run(initial_params=initial_params)
