"""The reward model: the policy backbone with a scalar head, and a reward fn that scores with it.

Params are the policy's pytree (same keys, shapes and shardings, so a policy / SFT checkpoint initialises
the backbone) plus one extra top-level entry ``params["reward_head"] = {"w": f32[d_model], "b": f32[]}``.
The reward of a sequence is the head applied to the final-normed hidden state of its last real token::

    r[b] = hidden_states(backbone)[b, last[b]] . w + b,   last[b] = max{t : segment_ids[b, t] > 0}

The policy's ``lm_head`` stays in the tree (an SFT checkpoint loads as is) but is frozen: the reward never
reads it (``trainable_mask``).

What is scored is always the final answer as one complete non-thinking assistant turn:
``render_prompt(messages, thinking=False) + answer + <|im_end|>`` (``encode_response``), for training pairs
(``chosen`` / ``rejected``) and for rollouts alike; a response's reasoning block is stripped first (by
``RewardFn.score`` for rollouts). A sequence longer than the scoring width keeps its *last* tokens (the
reward is read at the end), and the info of such a sample says so.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.checkpoint import Checkpointer, restore_params
from nemocascade.data.chat_template import render_prompt
from nemocascade.data.tokenizer import load_tokenizer
from nemocascade.rewards.base import RewardFn, Verification

HEAD = "reward_head"


# ------------------------------------------------------------------------------------------------ params
def init_head(cfg: model_lib.ModelConfig) -> dict:
    """``{"w": zeros f32[d_model], "b": zeros f32[]}``: every reward starts at 0 (Bradley-Terry loss log 2)."""
    return {"w": jnp.zeros((cfg.d_model,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def init_reward_params(cfg: model_lib.ModelConfig, rng: jax.Array, *, backbone=None) -> dict:
    """Reward-model params: ``backbone`` (policy params, e.g. from SFT; None = fresh from ``rng``) + the head."""
    if backbone is None:
        backbone = model_lib.init_params(cfg, rng)
    if HEAD in backbone:
        raise ValueError(f"the backbone params already have a {HEAD!r} entry (pass policy params)")
    return {**backbone, HEAD: init_head(cfg)}


def backbone_params(params) -> dict:
    """The policy part of reward-model params (everything but the head)."""
    return {k: v for k, v in params.items() if k != HEAD}


def trainable_mask(params, cfg: model_lib.ModelConfig, *, freeze_router: bool = False):
    """The policy's mask (router bias never trained, router when frozen) with ``lm_head`` frozen too."""
    mask = model_lib.trainable_mask(params, cfg, freeze_router=freeze_router)
    if "lm_head" in mask:
        mask = {**mask, "lm_head": jax.tree.map(lambda _: False, mask["lm_head"])}
    return mask


def param_shardings(mesh: jax.sharding.Mesh, cfg: model_lib.ModelConfig) -> dict:
    """The policy's param shardings plus a replicated head."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return {**sharding_lib.param_shardings(mesh, cfg), HEAD: {"w": replicated, "b": replicated}}


# ------------------------------------------------------------------------------------------------ scores
def last_token_index(segment_ids: jax.Array) -> jax.Array:
    """int32[B]: the last position with ``segment_ids > 0`` in each row (T - 1 for an all-padding row)."""
    t = segment_ids.shape[1]
    from_end = jnp.argmax(jnp.flip(segment_ids > 0, axis=1), axis=1)
    return (t - 1 - from_end).astype(jnp.int32)


def reward_scores_and_aux(params, cfg: model_lib.ModelConfig, tokens: jax.Array, segment_ids: jax.Array, *,
                          positions: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Scalar rewards f32[B] of ``tokens`` and the backbone's ``aux`` (MoE losses, expert load).

    Args:
      params: reward-model params (``init_reward_params``).
      tokens: int32[B, T], one sequence per row, padded anywhere (usually on the right).
      segment_ids: int32[B, T], > 0 on the sequence's tokens, 0 on padding (one segment per row).
      positions: int32[B, T] or None (= the offset inside the segment, as ``forward`` defaults).
    Returns:
      ``(rewards f32[B], aux)``: ``rewards[b] = hidden[b, last[b]] . w + b`` with ``hidden`` the
      final-normed hidden states f32[B, T, D] and ``last[b]`` the last position with ``segment_ids > 0``.
      Padding never changes a row's reward (it is masked out of attention and routing statistics).
    """
    hidden, aux = model_lib.hidden_states(backbone_params(params), cfg, tokens, positions=positions,
                                          segment_ids=segment_ids)
    last = last_token_index(jnp.asarray(segment_ids))
    final = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]           # [B, D]
    head = params[HEAD]
    rewards = final @ head["w"].astype(final.dtype) + head["b"].astype(final.dtype)
    return rewards.astype(jnp.float32), aux


def reward_scores(params, cfg: model_lib.ModelConfig, tokens: jax.Array, segment_ids: jax.Array, *,
                  positions: jax.Array | None = None) -> jax.Array:
    """f32[B] rewards (see ``reward_scores_and_aux``)."""
    return reward_scores_and_aux(params, cfg, tokens, segment_ids, positions=positions)[0]


# ------------------------------------------------------------------------------------------ token rows
def encode_response(tokenizer, messages: Sequence[dict], answer: str) -> list[int]:
    """Ids of ``render_prompt(messages, thinking=False)``, then ``answer``, then ``<|im_end|>``.

    The prompt and the answer are encoded separately, as a sampler produces them.
    """
    return (tokenizer.encode(render_prompt(list(messages), thinking=False)) + tokenizer.encode(answer)
            + [tokenizer.eos_id])


def pad_rows(sequences: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, segment_ids)`` int32[N, width]: each sequence's last ``width`` ids, right-padded;
    segment id 1 on real tokens, 0 on padding."""
    tokens = np.full((len(sequences), width), pad_id, np.int32)
    segment_ids = np.zeros((len(sequences), width), np.int32)
    for i, ids in enumerate(sequences):
        ids = list(ids)[-width:]
        tokens[i, :len(ids)] = ids
        segment_ids[i, :len(ids)] = 1
    return tokens, segment_ids


# ------------------------------------------------------------------------------------------ reward fn
class RewardModelFn(RewardFn):
    """The reward-fn contract (``score(samples) -> (f32[N], infos)``) backed by a trained reward model.

    A sample is ``{"messages": prompt turns, "response": str, ...}`` (what ``stages.prompts.decode_samples``
    builds). Rewards are the model's raw scores (unbounded; higher is better), plus any ``RewardFn``
    shaping. Scoring runs under one ``jax.jit`` on fixed ``[batch_size, max_len]`` blocks (the last block
    is padded with empty rows), so it compiles once whatever the number of samples. Info per sample:
    ``rm_score``, ``num_tokens`` and ``truncated``; ``reason`` is "" unless the sequence was truncated.

    Args:
      params: reward-model params (possibly sharded on ``mesh``).
      cfg: the backbone's model config.
      tokenizer: the tokenizer the model was trained with.
      batch_size: rows per jitted call (rounded up to a multiple of the mesh's batch shards).
      max_len: scoring width in tokens (longer sequences keep their last ``max_len`` tokens).
      mesh: if given, rows are split over its batch axes.
      options: ``RewardFn`` options (``require_thinking``, shaping).
    """
    domain = "chat"
    required_fields = {"messages": list}

    def __init__(self, params, cfg: model_lib.ModelConfig, tokenizer, *, batch_size: int = 64,
                 max_len: int = 512, mesh=None, **options):
        super().__init__(**options)
        if batch_size < 1 or max_len < 2:
            raise ValueError(f"batch_size must be >= 1 and max_len >= 2, got {batch_size}, {max_len}")
        if max_len > cfg.max_seq_len:
            raise ValueError(f"max_len={max_len} exceeds the model's max_seq_len={cfg.max_seq_len}")
        shards = sharding_lib.batch_shards(mesh) if mesh is not None else 1
        self.params, self.cfg, self.tokenizer, self.mesh = params, cfg, tokenizer, mesh
        self.batch_size = -(-batch_size // shards) * shards
        self.max_len = max_len
        self._rows_sharding = sharding_lib.batch_sharding(mesh) if mesh is not None else None
        self._scores = jax.jit(lambda p, tokens, segment_ids: reward_scores(p, cfg, tokens, segment_ids))

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str, *, step: int | None = None, mesh=None, batch_size: int = 64,
                        max_len: int | None = None, **options) -> "RewardModelFn":
        """The reward model saved by a ``reward_model`` stage in ``checkpoint_dir`` (its latest step by default).

        The model config, tokenizer and (unless ``max_len`` is given) the scoring width ``data.seq_len``
        come from the config saved with the checkpoint; only the params are read (no optimizer moments).
        """
        checkpointer = Checkpointer(checkpoint_dir, async_save=False)
        try:
            saved = checkpointer.restore_config(step)
        finally:
            checkpointer.close()
        cfg = model_lib.ModelConfig.from_dict(saved["model"])
        shapes = jax.eval_shape(lambda r: init_reward_params(cfg, r), jax.random.PRNGKey(0))
        if mesh is None:
            shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), shapes)
        else:
            shardings = param_shardings(mesh, cfg)
        abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
        params = restore_params(checkpoint_dir, abstract, step=step)
        return cls(params, cfg, load_tokenizer(saved["data"]["tokenizer"]), batch_size=batch_size,
                   max_len=max_len or int(saved["data"]["seq_len"]), mesh=mesh, **options)

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """f32[N] rewards of token-id sequences (e.g. ``encode_response`` rows), ``batch_size`` at a time."""
        out = np.zeros(len(sequences), np.float32)
        for start in range(0, len(sequences), self.batch_size):
            chunk = list(sequences[start:start + self.batch_size])
            tokens, segment_ids = pad_rows(chunk + [[]] * (self.batch_size - len(chunk)), self.max_len,
                                           self.tokenizer.pad_id)
            if self._rows_sharding is not None:
                tokens, segment_ids = jax.device_put((tokens, segment_ids), self._rows_sharding)
            with _maybe_mesh(self.mesh):
                scores = self._scores(self.params, tokens, segment_ids)
            out[start:start + len(chunk)] = np.asarray(sharding_lib.to_host(scores))[:len(chunk)]
        return out

    def verify_batch(self, samples: Sequence[dict], answers: Sequence[str]) -> list[Verification]:
        rows = [encode_response(self.tokenizer, s["messages"], a) for s, a in zip(samples, answers)]
        scores = self.score_ids(rows)
        verdicts = []
        for ids, score in zip(rows, scores):
            truncated = len(ids) > self.max_len
            reason = f"scored only the last {self.max_len} of {len(ids)} tokens" if truncated else ""
            verdicts.append(Verification(float(score), reason, True, {"rm_score": float(score),
                                                                      "num_tokens": len(ids),
                                                                      "truncated": truncated}))
        return verdicts


def _maybe_mesh(mesh):
    return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
