"""``generate_episodes``: multi-turn rollouts, where an environment answers each assistant turn.

An episode alternates sampled turns and environment observations on one token row:

  prompt | turn 1 (sampled, ends with a stop token) | observation 1 (the environment's ids) | turn 2 | ...

Each turn is one ``generate`` call over the rows still playing, with the row's whole history as its prompt
(prefilled again: no cache is kept between turns). The sampler's log-probs of a turn are therefore those of one
full forward over the finished row, so a multi-turn row trains strictly on-policy like a single-turn one; the
observation tokens are flagged in ``Rollouts.observed`` (log-prob 0) and no loss trains on them.

An episode ends (``finished=True``) when the environment answers a turn with None (e.g. the turn calls no tool:
it is the final answer). It ends unfinished (``finished=False``) when a turn hits ``EpisodeLimits.turn_tokens``
without a stop token, when ``max_turns`` turns are spent and the environment still answers, or when the
observation plus one more whole turn would not fit ``total_tokens`` (the observation is then not appended).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np

from nemocascade import model as model_lib
from nemocascade.rollout.generate import Rollouts, generate, prompt_bucket, validate_prompts

Respond = Callable[[int, list[int]], "Sequence[int] | None"]


@dataclasses.dataclass(frozen=True)
class EpisodeLimits:
    """Budgets of a multi-turn episode (tokens).

    Attributes:
      max_turns: assistant turns at most.
      turn_tokens: the budget of one assistant turn (one compiled decode length for every turn).
      total_tokens: the whole response after the prompt (turns and observations), the training row's budget.
    """
    max_turns: int
    turn_tokens: int
    total_tokens: int

    def __post_init__(self):
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if not 0 < self.turn_tokens <= self.total_tokens:
            raise ValueError(f"turn_tokens must be in [1, total_tokens={self.total_tokens}], got {self.turn_tokens}")


def _padded_rows(open_rows: list[int], n: int) -> list[int]:
    """``open_rows`` padded (with copies of its first row, whose samples are dropped) to the next power of two, at
    most ``n``: a turn's batch takes few distinct sizes, so the decode loop compiles few times."""
    size = min(1 << (len(open_rows) - 1).bit_length(), n)
    return open_rows + [open_rows[0]] * (size - len(open_rows))


def generate_episodes(params, cfg: model_lib.ModelConfig, prompts: Sequence[Sequence[int]], respond: Respond, *,
                      limits: EpisodeLimits, num_samples: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                      top_k: int = 0, stop_tokens: Sequence[int] = (), rng: jax.Array, mesh=None,
                      pad_id: int = 0) -> Rollouts:
    """Samples ``num_samples`` episodes per prompt (rows of one prompt contiguous, as in ``generate``).

    Args:
      params, cfg, prompts, num_samples, temperature, top_p, top_k, stop_tokens, mesh, pad_id: as ``generate``.
      respond: ``respond(row, turn_ids)`` -> the ids the environment appends after row ``row``'s turn
        (``turn_ids``: the sampled turn, its stop token included), or None when the episode is over. Row ``row``
        plays prompt ``row // num_samples``. Called on the host, in row order, once per finished turn.
      limits: turn count and token budgets (see ``EpisodeLimits``).
      rng: PRNG key; turn ``t`` samples with ``fold_in(rng, t)`` (same key + inputs = same episodes).
    Returns:
      ``Rollouts`` with ``L = prompt bucket + limits.total_tokens``; ``response_lengths`` count turns and
      observations; ``observed`` marks the observations.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    validate_prompts(prompts, cfg, limits.total_tokens)
    prompt_rows = [list(map(int, p)) for p in prompts for _ in range(num_samples)]
    n = len(prompt_rows)
    responses: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    observed: list[list[bool]] = [[] for _ in range(n)]
    finished = np.zeros(n, bool)
    open_rows = list(range(n))
    for turn in range(limits.max_turns):
        if not open_rows:
            break
        batch = _padded_rows(open_rows, n)
        out = generate(params, cfg, [prompt_rows[i] + responses[i] for i in batch],
                       max_new_tokens=limits.turn_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                       stop_tokens=stop_tokens, rng=jax.random.fold_in(rng, turn), mesh=mesh, pad_id=pad_id)
        still_open = []
        for j, row in enumerate(open_rows):
            start, length = int(out.prompt_lengths[j]), int(out.response_lengths[j])
            turn_ids = out.tokens[j, start:start + length].tolist()
            responses[row] += turn_ids
            logprobs[row] += out.logprobs[j, start:start + length].tolist()
            observed[row] += [False] * length
            if not out.finished[j]:
                continue                      # the turn hit its budget: the episode ends unfinished
            observation = respond(row, turn_ids)
            if observation is None:
                finished[row] = True
                continue
            observation = list(map(int, observation))
            fits = len(responses[row]) + len(observation) + limits.turn_tokens <= limits.total_tokens
            if turn + 1 < limits.max_turns and fits:
                responses[row] += observation
                logprobs[row] += [0.0] * len(observation)
                observed[row] += [True] * len(observation)
                still_open.append(row)
        open_rows = still_open
    return _as_rollouts(prompt_rows, responses, logprobs, observed, finished, cfg=cfg,
                        total_tokens=limits.total_tokens, pad_id=pad_id)


def _as_rollouts(prompt_rows, responses, logprobs, observed, finished, *, cfg, total_tokens: int,
                 pad_id: int) -> Rollouts:
    """The rows laid out as ``generate`` lays them out (prompt, response, padding)."""
    n = len(prompt_rows)
    prompt_lengths = np.asarray([len(p) for p in prompt_rows], np.int32)
    width = min(prompt_bucket(int(prompt_lengths.max())), cfg.max_seq_len - total_tokens) + total_tokens
    tokens = np.full((n, width), pad_id, np.int32)
    row_logprobs = np.zeros((n, width), np.float32)
    row_observed = np.zeros((n, width), bool)
    for i, (prompt, response) in enumerate(zip(prompt_rows, responses)):
        p, r = len(prompt), len(response)
        tokens[i, :p] = prompt
        tokens[i, p:p + r] = response
        row_logprobs[i, p:p + r] = logprobs[i]
        row_observed[i, p:p + r] = observed[i]
    return Rollouts(tokens=tokens, logprobs=row_logprobs, prompt_lengths=prompt_lengths,
                    response_lengths=np.asarray([len(r) for r in responses], np.int32), finished=finished,
                    forced=np.zeros((n, width), bool), observed=row_observed)
