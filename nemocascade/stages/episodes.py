"""Sampling the answers to task examples: one turn, or episodes played against the domains' environments.

``sample_rollouts`` is what every RL stage and the held-out evaluation draw from. With ``max_turns == 1``, or
when no example's domain has an environment, it is one ``generate`` call of ``max_new_tokens``. Otherwise a row
whose domain has an environment (``nemocascade.environments``) is played as an episode
(``rollout.generate_episodes``): after each turn the environment answers (tool results), its messages are
rendered as the chat template writes them between two assistant turns (``chat_template.render_observation``) and
appended, and the next turn is sampled; in such a batch, rows of other domains end after their first turn (of at
most ``turn_tokens``). The rows' environment answers to one turn run on ``ENVIRONMENT_WORKERS`` threads (an
environment that runs tests in the code sandbox waits on them in parallel, one sandbox slot each).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import jax

from nemocascade import data as data_lib
from nemocascade import environments
from nemocascade.rollout import EpisodeLimits, Rollouts, generate, generate_episodes
from nemocascade.stages.prompts import encode_prompts


# Threads answering the rows' turns: as many as the code sandbox has slots by default (one per CPU).
ENVIRONMENT_WORKERS = os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Turns:
    """How many assistant turns an answer may take and their budgets (tokens).

    max_turns: 1 = single-turn; more = episodes for the domains with an environment.
    turn_tokens: one turn's budget (0 = ``max_new_tokens``).
    max_new_tokens: the whole answer after the prompt (all turns and the environment's messages).
    """
    max_new_tokens: int
    max_turns: int = 1
    turn_tokens: int = 0

    def limits(self) -> EpisodeLimits:
        return EpisodeLimits(max_turns=self.max_turns, turn_tokens=self.turn_tokens or self.max_new_tokens,
                             total_tokens=self.max_new_tokens)


def environment_respond(examples: Sequence[dict], tokenizer, *, num_samples: int, thinking: bool):
    """``respond(row, turn_ids)`` for ``generate_episodes``: the ids of the row's environment's answer to the
    row's decoded turns so far (stop tokens dropped), or None (no environment for the row's domain, or the episode
    is over). Safe to call from several threads for distinct rows (each row keeps its own list of turns)."""
    turns: dict[int, list[str]] = {}

    def respond(row: int, turn_ids: list[int]):
        example = examples[row // num_samples]
        environment = environments.get_environment(example["domain"])
        if environment is None:
            return None
        if turn_ids and turn_ids[-1] == tokenizer.eos_id:
            turn_ids = turn_ids[:-1]
        turns.setdefault(row, []).append(tokenizer.decode(turn_ids))
        messages = environment.respond(example, turns[row])
        if messages is None:
            return None
        return tokenizer.encode(data_lib.render_observation(messages, thinking=thinking))
    return respond


def sample_rollouts(params, model_cfg, tokenizer, examples: Sequence[dict], *, turns: Turns, num_samples: int,
                    temperature: float, rng: jax.Array, thinking: bool, top_p: float = 1.0, mesh=None,
                    prompts: Sequence[Sequence[int]] | None = None) -> Rollouts:
    """``num_samples`` answers to each of ``examples`` (rows of one example contiguous), each ending with the
    tokenizer's end-of-turn id or at its budget. ``prompts``: the examples' prompt ids when the caller has them
    (else ``prompts.encode_prompts``)."""
    if prompts is None:
        prompts = encode_prompts(examples, tokenizer, thinking=thinking)
    common = dict(num_samples=num_samples, temperature=temperature, top_p=top_p, stop_tokens=(tokenizer.eos_id,),
                  rng=rng, mesh=mesh, pad_id=tokenizer.pad_id)
    if turns.max_turns == 1 or not environments.multi_turn_domains([e["domain"] for e in examples]):
        return generate(params, model_cfg, prompts, max_new_tokens=turns.max_new_tokens, **common)
    respond = environment_respond(examples, tokenizer, num_samples=num_samples, thinking=thinking)
    return generate_episodes(params, model_cfg, prompts, respond, limits=turns.limits(),
                             respond_workers=ENVIRONMENT_WORKERS, **common)
