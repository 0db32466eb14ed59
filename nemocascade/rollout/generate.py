"""``generate``: cached sampling from the policy's own params (prefill once, then a jitted decode loop).

``sample_into_cache`` and ``feed_cache`` are its steps over a cache the caller keeps, so that a multi-turn episode
(``multi_turn.py``) continues its rows' caches from turn to turn.

The cache (``model.init_cache``) holds each attention layer's keys/values and each Mamba-2 layer's conv
history and SSM state, so a hybrid model's Mamba-2 layers cost O(1) per decoded token.

Layout of a ``Rollouts`` row ``i`` (``L = prompt bucket + max_new_tokens``):
``tokens[i, :prompt_lengths[i]]`` is the prompt, the next ``response_lengths[i]`` tokens the response
(a stop token, when one ended the row, is its last token and counts), then padding (``pad_id``).
``logprobs`` is aligned with ``tokens`` and is 0 outside the response. Samples of one prompt are
contiguous rows (``num_samples`` of them). See ``sampling.py`` for what the log-probs are.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.rollout.sampling import sample_tokens


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Static sampling settings (a change recompiles the decode loop).

    Attributes:
      max_new_tokens: response budget per row (tokens, stop token included).
      temperature: 0 = greedy; else sample from softmax(logits / temperature).
      top_p, top_k: nucleus / top-k truncation (1.0 / 0 = off).
      stop_tokens: ids that end a row (the id is kept as the row's last response token).
      think_budget: if set, at most this many response tokens before ``think_end_tokens`` is forced
        (the chat template's reasoning block is closed and the answer follows); forced tokens are
        flagged in ``Rollouts.forced`` so losses can mask them.
      think_end_tokens: the token ids that close the reasoning block (e.g. ``</think>`` and a newline).
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_tokens: tuple[int, ...] = ()
    think_budget: int | None = None
    think_end_tokens: tuple[int, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.think_budget is not None and not self.think_end_tokens:
            raise ValueError("think_budget needs think_end_tokens (the ids that close the reasoning block)")


@dataclasses.dataclass
class Rollouts:
    """Sampled sequences (host numpy arrays), ``N = len(prompts) * num_samples`` rows.

    Attributes:
      tokens: int32[N, L] prompt + response + padding per row.
      logprobs: f32[N, L] log-prob of each response token (0 elsewhere).
      prompt_lengths: int32[N].
      response_lengths: int32[N] (stop token included).
      finished: bool[N] True if a stop token ended the row, False if it hit ``max_new_tokens``.
      forced: bool[N, L] True on tokens forced by the thinking budget (not sampled).
      observed: bool[N, L] True on response tokens the environment wrote between two turns of a multi-turn
        episode (``multi_turn.generate_episodes``: tool responses and the next turn's header); all False for
        ``generate``. Their ``logprobs`` are 0 and no loss trains on them.
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    prompt_lengths: np.ndarray
    response_lengths: np.ndarray
    finished: np.ndarray
    forced: np.ndarray
    observed: np.ndarray

    def response_mask(self) -> np.ndarray:
        """f32[N, L]: 1 on sampled response tokens (forced and observed ones excluded), else 0."""
        positions = np.arange(self.tokens.shape[1])[None, :]
        start = self.prompt_lengths[:, None]
        in_response = (positions >= start) & (positions < start + self.response_lengths[:, None])
        return (in_response & ~self.forced & ~self.observed).astype(np.float32)

    def segment_ids(self) -> np.ndarray:
        """int32[N, L]: 1 on prompt + response tokens, 0 on padding (for a training forward)."""
        positions = np.arange(self.tokens.shape[1])[None, :]
        return (positions < (self.prompt_lengths + self.response_lengths)[:, None]).astype(np.int32)

    def responses(self) -> list[list[int]]:
        """The response token ids of each row."""
        return [self.tokens[i, p:p + r].tolist()
                for i, (p, r) in enumerate(zip(self.prompt_lengths, self.response_lengths))]


def prompt_bucket(length: int, multiple: int = 16) -> int:
    """Rounds a prompt length up so that nearby lengths share one compiled prefill."""
    return -(-length // multiple) * multiple


def validate_prompts(prompts: Sequence[Sequence[int]], cfg: model_lib.ModelConfig, max_new_tokens: int):
    """ValueError for no prompts, an empty one, ids outside the vocabulary, or a prompt that with
    ``max_new_tokens`` more tokens would not fit ``cfg.max_seq_len``."""
    if not prompts:
        raise ValueError("generate() got no prompts")
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
        if len(prompt) + max_new_tokens > cfg.max_seq_len:
            raise ValueError(
                f"prompt {i} has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} that exceeds the "
                f"model's max_seq_len={cfg.max_seq_len}")
        bad = [t for t in prompt if not 0 <= int(t) < cfg.vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has token ids outside [0, {cfg.vocab_size}): {bad[:5]}")


@dataclasses.dataclass
class Sampled:
    """What one sampler call appended to each of its ``N`` rows (host numpy arrays, ``T = max_new_tokens``).

    Attributes:
      tokens: int32[N, T] the sampled tokens (0 after a row's length).
      logprobs: f32[N, T] their log-probs (0 after a row's length).
      lengths: int32[N] tokens sampled (a stop token, when one ended the row, included).
      finished: bool[N] True if a stop token ended the row.
      forced: bool[N, T] True on tokens forced by the thinking budget.
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    finished: np.ndarray
    forced: np.ndarray


def right_padded(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32[N, width], segment_ids int32[N, width]) of token-id ``rows`` (each at most ``width`` long),
    padded on the right with ``pad_id`` (segment 0)."""
    tokens = np.full((len(rows), width), pad_id, np.int32)
    segment_ids = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
        segment_ids[i, :len(row)] = 1
    return tokens, segment_ids


def sample_into_cache(params, cfg: model_lib.ModelConfig, cache, tokens: np.ndarray, segment_ids: np.ndarray, *,
                      sampling: SamplingParams, rng: jax.Array, fresh: bool, mesh=None) -> tuple[Sampled, dict]:
    """Feeds each row's right-padded ``tokens`` into ``cache``, then samples until every row stopped or the budget
    is spent.

    Args:
      cache: ``model.init_cache``'s cache over ``N`` rows, placed as ``sharding.sampler_rows_sharding`` places it
        when ``mesh`` is given; donated (do not reuse it).
      tokens, segment_ids: int32[N, W] (``right_padded``); every row feeds at least one token.
      fresh: True if the cache is empty (the tokens are prefilled as self-attention: flash attention with the
        Pallas kernels); False continues each row after its cached tokens.
    Returns:
      (``Sampled``, the cache after the call). The cache holds the fed tokens and every sampled token but each
      row's last one: a caller continuing a row feeds that token first.
    """
    with _maybe_mesh(mesh):
        out, cache = _feed_and_decode(params, cache, *_rows_on_device(mesh, tokens, segment_ids), rng, cfg=cfg,
                                      sampling=sampling, fresh=fresh)
    return Sampled(*sharding_lib.to_host(out)), cache


def feed_cache(params, cfg: model_lib.ModelConfig, cache, tokens: np.ndarray, segment_ids: np.ndarray, *,
               mesh=None) -> dict:
    """The cache after feeding each row's right-padded ``tokens`` int32[N, W] after its cached tokens (a row may
    feed none: all its ``segment_ids`` 0); nothing is sampled. ``cache`` as in ``sample_into_cache`` (donated)."""
    with _maybe_mesh(mesh):
        return _feed(params, cache, *_rows_on_device(mesh, tokens, segment_ids), cfg=cfg)


def _rows_on_device(mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Host arrays over the sampler's rows, on device (split as ``sharding.sampler_rows_sharding`` with a mesh)."""
    on_device = tuple(jnp.asarray(a) for a in arrays)
    if mesh is None:
        return on_device
    return jax.device_put(on_device, sharding_lib.sampler_rows_sharding(mesh, arrays[0].shape[0]))


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def _feed(params, cache, tokens, segment_ids, *, cfg):
    return model_lib.hidden_states(params, cfg, tokens, segment_ids=segment_ids, cache=cache)[1]["cache"]


@functools.partial(jax.jit, static_argnames=("cfg", "sampling", "fresh"), donate_argnames=("cache",))
def _feed_and_decode(params, cache, tokens, segment_ids, rng, *, cfg, sampling: SamplingParams, fresh: bool):
    """``sample_into_cache`` on device: ((tokens, logprobs, lengths, finished, forced), final cache)."""
    n = tokens.shape[0]
    budget = sampling.max_new_tokens
    fed_lengths = jnp.sum(segment_ids > 0, axis=1)
    # The LM head runs on each row's last fed position only: no f32 [N, P, V] prefill logits.
    hidden, aux = model_lib.hidden_states(params, cfg, tokens, segment_ids=segment_ids, cache=cache, prefill=fresh)
    last_hidden = jnp.take_along_axis(hidden, (fed_lengths - 1)[:, None, None], axis=1)[:, 0]
    last_logits = model_lib.head_logits(params, cfg, last_hidden)
    stop_tokens = jnp.asarray(sampling.stop_tokens or (-1,), jnp.int32)
    think_end = jnp.asarray(sampling.think_end_tokens or (-1,), jnp.int32)

    def choose(rng, step_logits, step, think_state):
        """Samples a token, then applies the thinking budget. think_state: int32[N], -1 = still thinking,
        k >= 0 = k end-of-think tokens already emitted (forced or sampled)."""
        token, logprob = sample_tokens(rng, step_logits, temperature=sampling.temperature,
                                       top_k=sampling.top_k, top_p=sampling.top_p)
        forced = jnp.zeros((n,), bool)
        if sampling.think_budget is not None:
            num_end = think_end.shape[0]
            must_close = (think_state >= 0) & (think_state < num_end) | (
                (think_state < 0) & (step >= sampling.think_budget))
            index = jnp.clip(jnp.maximum(think_state, 0), 0, num_end - 1)
            forced_token = think_end[index]
            forced = must_close & (token != forced_token)
            token = jnp.where(must_close, forced_token, token)
            full = jax.nn.log_softmax(step_logits.astype(jnp.float32) / (sampling.temperature or 1.0), axis=-1)
            logprob = jnp.where(forced, jnp.take_along_axis(full, token[:, None], axis=-1)[:, 0], logprob)
            opened_close = (think_state < 0) & (token == think_end[0])
            think_state = jnp.where(must_close | opened_close, jnp.maximum(think_state, 0) + 1, think_state)
        return token, logprob, forced, think_state

    rng, first_rng = jax.random.split(rng)
    think_state = jnp.full((n,), -1, jnp.int32)
    token, logprob, forced, think_state = choose(first_rng, last_logits, 0, think_state)
    out_tokens = jnp.zeros((n, budget), jnp.int32).at[:, 0].set(token)
    out_logprobs = jnp.zeros((n, budget), jnp.float32).at[:, 0].set(logprob)
    out_forced = jnp.zeros((n, budget), bool).at[:, 0].set(forced)
    finished = jnp.isin(token, stop_tokens)
    lengths = jnp.ones((n,), jnp.int32)

    def cond(carry):
        step, _, _, _, _, finished, _, _, _, _ = carry
        return (step < budget) & ~jnp.all(finished)

    def body(carry):
        step, cache, token, out_tokens, out_logprobs, finished, lengths, out_forced, think_state, rng = carry
        rng, step_rng = jax.random.split(rng)
        active = ~finished
        step_logits, step_aux = model_lib.forward(params, cfg, token[:, None],
                                                  segment_ids=active[:, None].astype(jnp.int32), cache=cache)
        new_token, new_logprob, new_forced, new_think = choose(step_rng, step_logits[:, 0], step, think_state)
        new_token = jnp.where(active, new_token, 0)
        out_tokens = out_tokens.at[:, step].set(new_token)
        out_logprobs = out_logprobs.at[:, step].set(jnp.where(active, new_logprob, 0.0))
        out_forced = out_forced.at[:, step].set(active & new_forced)
        think_state = jnp.where(active, new_think, think_state)
        lengths = lengths + active.astype(jnp.int32)
        finished = finished | (active & jnp.isin(new_token, stop_tokens))
        return (step + 1, step_aux["cache"], new_token, out_tokens, out_logprobs, finished, lengths, out_forced,
                think_state, rng)

    carry = (jnp.asarray(1, jnp.int32), aux["cache"], token, out_tokens, out_logprobs, finished, lengths,
             out_forced, think_state, rng)
    carry = jax.lax.while_loop(cond, body, carry)
    _, cache, _, out_tokens, out_logprobs, finished, lengths, out_forced, _, _ = carry
    # The final cache is returned so that the donated input cache's buffers back it (no second copy).
    return (out_tokens, out_logprobs, lengths, finished, out_forced), cache


def generate(params, cfg: model_lib.ModelConfig, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             num_samples: int = 1, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             stop_tokens: Sequence[int] = (), rng: jax.Array, mesh=None, pad_id: int = 0,
             think_budget: int | None = None, think_end_tokens: Sequence[int] = ()) -> Rollouts:
    """Samples ``num_samples`` responses per prompt with the model's KV cache.

    Args:
      params: the policy params (the train state's own pytree: nothing is copied).
      cfg: the model config.
      prompts: token-id lists of any lengths (each >= 1 token, prompt + budget <= cfg.max_seq_len).
      max_new_tokens: response budget.
      num_samples: samples per prompt; rows of one prompt are contiguous.
      temperature, top_p, top_k, stop_tokens, think_budget, think_end_tokens: see ``SamplingParams``.
      rng: PRNG key (same key + same inputs = same rollouts).
      mesh: if given, rows and the cache are sharded over the mesh's batch axes and ``sequence``
        (``sharding.sampler_rows_sharding``; params are used in the sharding they already have).
      pad_id: id written into padding positions of ``Rollouts.tokens``.
    Returns:
      ``Rollouts`` (host numpy arrays).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=float(temperature), top_p=float(top_p),
                              top_k=int(top_k), stop_tokens=tuple(int(t) for t in stop_tokens),
                              think_budget=think_budget, think_end_tokens=tuple(int(t) for t in think_end_tokens))
    validate_prompts(prompts, cfg, max_new_tokens)
    rows = [list(map(int, p)) for p in prompts for _ in range(num_samples)]
    n = len(rows)
    prompt_lengths = np.asarray([len(r) for r in rows], np.int32)
    width = min(prompt_bucket(int(prompt_lengths.max())), cfg.max_seq_len - max_new_tokens)
    cache = model_lib.init_cache(cfg, n, width + max_new_tokens)
    if mesh is not None:
        cache = jax.device_put(cache, sharding_lib.sampler_rows_sharding(mesh, n))
    out, _ = sample_into_cache(params, cfg, cache, *right_padded(rows, width, pad_id), sampling=sampling, rng=rng,
                               fresh=True, mesh=mesh)

    full_tokens = np.full((n, width + max_new_tokens), pad_id, np.int32)
    full_logprobs = np.zeros((n, width + max_new_tokens), np.float32)
    full_forced = np.zeros((n, width + max_new_tokens), bool)
    for i, row in enumerate(rows):
        p, r = len(row), int(out.lengths[i])
        full_tokens[i, :p] = row
        full_tokens[i, p:p + r] = out.tokens[i, :r]
        full_logprobs[i, p:p + r] = out.logprobs[i, :r]
        full_forced[i, p:p + r] = out.forced[i, :r]
    return Rollouts(tokens=full_tokens, logprobs=full_logprobs, prompt_lengths=prompt_lengths,
                    response_lengths=out.lengths.astype(np.int32), finished=out.finished.astype(bool),
                    forced=full_forced, observed=np.zeros_like(full_forced))


def _maybe_mesh(mesh):
    import contextlib  # pylint: disable=import-outside-toplevel
    return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
