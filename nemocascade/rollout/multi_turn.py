"""``generate_episodes``: multi-turn rollouts, where an environment answers each assistant turn.

An episode alternates sampled turns and environment observations on one token row:

  prompt | turn 1 (sampled, ends with a stop token) | observation 1 (the environment's ids) | turn 2 | ...

The rows keep one cache for the whole episode: the first turn prefills the prompts, and each later turn feeds
only the previous turn's last token and the observation (in calls of at most ``FEED_CHUNK`` tokens, which bound
what the cached attention holds) before it decodes. The rows still playing are gathered into
a smaller batch as episodes end. The sampler's log-probs of a turn are those of one full forward over the
finished row, so a multi-turn row trains strictly on-policy like a single-turn one; the observation tokens are
flagged in ``Rollouts.observed`` (log-prob 0) and no loss trains on them.

An episode ends (``finished=True``) when the environment answers a turn with None (e.g. the turn calls no tool:
it is the final answer). It ends unfinished (``finished=False``) when a turn hits ``EpisodeLimits.turn_tokens``
without a stop token, when ``max_turns`` turns are spent and the environment still answers, or when the
observation plus one more whole turn would not fit ``total_tokens`` (the observation is then not appended).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np

from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.rollout.generate import (Rollouts, SamplingParams, feed_cache, prompt_bucket, right_padded,
                                          sample_into_cache, validate_prompts)

Respond = Callable[[int, list[int]], "Sequence[int] | None"]
# Observation tokens fed into the cache per call (prompt_bucket's multiple). With the Pallas kernels a call is one
# decode-attention pass of FEED_CHUNK queries per row; on the XLA path it holds one layer's f32 [rows, H,
# FEED_CHUNK, slots] scores (for experiments/tool_use_rl.py:nano30b that would be 7 GiB per device).
FEED_CHUNK = 16


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
                      pad_id: int = 0, respond_workers: int = 1) -> Rollouts:
    """Samples ``num_samples`` episodes per prompt (rows of one prompt contiguous, as in ``generate``).

    Args:
      params, cfg, prompts, num_samples, temperature, top_p, top_k, stop_tokens, mesh, pad_id: as ``generate``.
      respond: ``respond(row, turn_ids)`` -> the ids the environment appends after row ``row``'s turn
        (``turn_ids``: the sampled turn, its stop token included), or None when the episode is over. Row ``row``
        plays prompt ``row // num_samples``. Called on the host once per finished turn: in row order, or with
        ``respond_workers > 1`` the calls of one turn (one per row) on that many threads, so an environment
        that waits on programs (tests in a sandbox) answers the rows in parallel; ``respond`` must then be
        thread-safe for calls on distinct rows.
      limits: turn count and token budgets (see ``EpisodeLimits``).
      rng: PRNG key; turn ``t`` samples with ``fold_in(rng, t)`` (same key + inputs = same episodes).
    Returns:
      ``Rollouts`` with ``L = prompt bucket + limits.total_tokens``; ``response_lengths`` count turns and
      observations; ``observed`` marks the observations.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if respond_workers < 1:
        raise ValueError(f"respond_workers must be >= 1, got {respond_workers}")
    validate_prompts(prompts, cfg, limits.total_tokens)
    sampling = SamplingParams(max_new_tokens=limits.turn_tokens, temperature=float(temperature), top_p=float(top_p),
                              top_k=int(top_k), stop_tokens=tuple(int(t) for t in stop_tokens))
    prompt_rows = [list(map(int, p)) for p in prompts for _ in range(num_samples)]
    n = len(prompt_rows)
    responses: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    observed: list[list[bool]] = [[] for _ in range(n)]
    finished = np.zeros(n, bool)
    width = _prompt_width(prompt_rows, cfg, limits.total_tokens)
    cache = _on_rows(model_lib.init_cache(cfg, n, width + limits.total_tokens), mesh)
    open_rows, slots, pending = list(range(n)), {}, {}   # slots: row -> its cache row; pending: ids to feed next
    for turn in range(limits.max_turns):
        if not open_rows:
            break
        batch = _padded_rows(open_rows, n)
        turn_rng = jax.random.fold_in(rng, turn)
        if turn == 0:
            out, cache = sample_into_cache(params, cfg, cache, *right_padded(prompt_rows, width, pad_id),
                                           sampling=sampling, rng=turn_rng, fresh=True, mesh=mesh)
        else:
            cache = _on_rows(_take_rows(cache, np.asarray([slots[row] for row in batch], np.int32)), mesh)
            feeds = [pending[row] for row in batch]
            cache = _feed_in_chunks(params, cfg, cache, [f[:-1] for f in feeds], mesh=mesh, pad_id=pad_id)
            out, cache = sample_into_cache(params, cfg, cache, *right_padded([f[-1:] for f in feeds], 1, pad_id),
                                           sampling=sampling, rng=turn_rng, fresh=False, mesh=mesh)
        slots = {row: j for j, row in enumerate(open_rows)}
        ended_turns = []                      # (row, turn ids) of the turns that ended with a stop token
        for j, row in enumerate(open_rows):
            length = int(out.lengths[j])
            turn_ids = out.tokens[j, :length].tolist()
            responses[row] += turn_ids
            logprobs[row] += out.logprobs[j, :length].tolist()
            observed[row] += [False] * length
            if out.finished[j]:               # else the turn hit its budget: the episode ends unfinished
                ended_turns.append((row, turn_ids))
        still_open = []
        for (row, turn_ids), observation in zip(ended_turns, _answers(respond, ended_turns, respond_workers)):
            if observation is None:
                finished[row] = True
                continue
            observation = list(map(int, observation))
            fits = len(responses[row]) + len(observation) + limits.turn_tokens <= limits.total_tokens
            if turn + 1 < limits.max_turns and fits:
                responses[row] += observation
                logprobs[row] += [0.0] * len(observation)
                observed[row] += [True] * len(observation)
                pending[row] = turn_ids[-1:] + observation   # the stop token is not in the cache yet
                still_open.append(row)
        open_rows = still_open
    return _as_rollouts(prompt_rows, responses, logprobs, observed, finished, width=width,
                        total_tokens=limits.total_tokens, pad_id=pad_id)


def _answers(respond: Respond, ended_turns: list[tuple[int, list[int]]], workers: int) -> list:
    """``respond(row, turn_ids)`` of each ended turn, in order; on ``workers`` threads when more than one."""
    if workers == 1 or len(ended_turns) < 2:
        return [respond(row, turn_ids) for row, turn_ids in ended_turns]
    with concurrent.futures.ThreadPoolExecutor(min(workers, len(ended_turns)),
                                               thread_name_prefix="environment") as pool:
        return list(pool.map(lambda ended: respond(*ended), ended_turns))


def _prompt_width(prompt_rows: list[list[int]], cfg: model_lib.ModelConfig, total_tokens: int) -> int:
    """The prompts' padded width: the longest prompt's bucket, at most what leaves ``total_tokens`` slots."""
    return min(prompt_bucket(max(map(len, prompt_rows))), cfg.max_seq_len - total_tokens)


def _on_rows(cache, mesh):
    """``cache`` split over the sampler's rows (``sharding.sampler_rows_sharding``) when there is a mesh."""
    if mesh is None:
        return cache
    return jax.device_put(cache, sharding_lib.sampler_rows_sharding(mesh, cache["lengths"].shape[0]))


@jax.jit
def _take_rows(cache, rows):
    """The cache of rows ``rows`` int32[M] (in that order)."""
    return jax.tree.map(lambda x: x[rows], cache)


def _feed_in_chunks(params, cfg, cache, feeds: list[list[int]], *, mesh, pad_id: int):
    """``cache`` after feeding each row's ``feeds`` ids, ``FEED_CHUNK`` tokens per call (none if all are empty)."""
    for start in range(0, max(map(len, feeds)), FEED_CHUNK):
        chunk = [f[start:start + FEED_CHUNK] for f in feeds]
        cache = feed_cache(params, cfg, cache, *right_padded(chunk, prompt_bucket(max(map(len, chunk))), pad_id),
                           mesh=mesh)
    return cache


def _as_rollouts(prompt_rows, responses, logprobs, observed, finished, *, width: int, total_tokens: int,
                 pad_id: int) -> Rollouts:
    """The rows laid out as ``generate`` lays them out (prompt, response, padding)."""
    n = len(prompt_rows)
    prompt_lengths = np.asarray([len(p) for p in prompt_rows], np.int32)
    width += total_tokens
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
