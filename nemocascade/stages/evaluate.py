"""Per-domain evaluation: greedy pass@1 and mean reward on held-out prompts with a fixed seed."""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from nemocascade import data as data_lib
from nemocascade import rewards as rewards_lib
from nemocascade.stages.episodes import Turns, sample_rollouts
from nemocascade.stages.prompts import decode_samples


def greedy_samples(params, model_cfg, tokenizer, examples: Sequence[dict], *, max_new_tokens: int,
                   thinking: bool = False, batch_size: int = 64, mesh=None, max_turns: int = 1,
                   turn_tokens: int = 0) -> list[dict]:
    """Reward-fn samples (``prompts.decode_samples``) of the greedy answers to ``examples``, ``batch_size`` at a
    time; ``rollout_group`` is the example's index in ``examples``. ``max_turns`` > 1: the domains with an
    environment are played as episodes (``episodes.Turns``)."""
    samples = []
    turns = Turns(max_new_tokens=max_new_tokens, max_turns=max_turns, turn_tokens=turn_tokens)
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start:start + batch_size])
        rollouts = sample_rollouts(params, model_cfg, tokenizer, chunk, turns=turns, num_samples=1, temperature=0.0,
                                   rng=jax.random.PRNGKey(0), thinking=thinking, mesh=mesh)
        samples += [{**s, "rollout_group": start + s["rollout_group"]}
                    for s in decode_samples(rollouts, chunk, tokenizer, num_samples=1)]
    return samples


def evaluate_domain(params, model_cfg, tokenizer, examples: Sequence[dict], *, domain: str,
                    max_new_tokens: int, thinking: bool = False, batch_size: int = 64, mesh=None,
                    reward_fn=None, max_turns: int = 1, turn_tokens: int = 0) -> dict:
    """Greedy decoding on ``examples``; returns ``{"pass_at_1", "mean_reward", "num_examples"}``.

    pass@1 counts a response as solved when its reward is 1.0 (the verifiers' full score). ``reward_fn``
    (None = the registered verifier of ``domain``) scores the responses, e.g. a reward model. A domain with an
    environment is played in up to ``max_turns`` turns of ``turn_tokens`` (``episodes.sample_rollouts``).
    """
    if reward_fn is None:
        reward_fn = rewards_lib.get_reward_fn(domain)
    samples = greedy_samples(params, model_cfg, tokenizer, examples, max_new_tokens=max_new_tokens,
                             thinking=thinking, batch_size=batch_size, mesh=mesh, max_turns=max_turns,
                             turn_tokens=turn_tokens)
    rewards = np.concatenate([np.asarray(reward_fn.score(samples[start:start + batch_size])[0], np.float32)
                              for start in range(0, len(samples), batch_size)])
    return {"pass_at_1": float(np.mean(rewards >= 1.0)), "mean_reward": float(np.mean(rewards)),
            "num_examples": int(rewards.size)}


def evaluate_domains(params, model_cfg, tokenizer, *, domains: Sequence[str], num_examples: int,
                     max_new_tokens: int, seed: int = 0, thinking: bool = False, mesh=None, max_turns: int = 1,
                     turn_tokens: int = 0) -> dict[str, dict]:
    """Evaluates each built-in toy domain on its held-out split (same examples for every checkpoint); the
    multi-turn domains in up to ``max_turns`` turns (``evaluate_domain``)."""
    return {domain: evaluate_domain(params, model_cfg, tokenizer,
                                    data_lib.toy_examples(domain, "heldout", num_examples, seed=seed),
                                    domain=domain, max_new_tokens=max_new_tokens, thinking=thinking, mesh=mesh,
                                    max_turns=max_turns, turn_tokens=turn_tokens)
            for domain in domains}
