"""The reward-model stage: Bradley-Terry on preference pairs through the shared train step and loop.

Pairs come from the toy domain ``data.domain`` (``chat``: its ``train`` split; evaluation on its ``heldout``
split, which shares no prompt with ``train``) or from ``data.jsonl`` rows ``{"prompt" | "messages",
"chosen", "rejected", ...}`` (held-out pairs from ``reward_model.eval_jsonl``). ``chosen``/``rejected`` are
answer texts (a leading reasoning block is dropped) or assistant messages; a bad row stops the read with
its ``path:line`` or is skipped (``data.on_bad_row``).

A train batch is ``tokens`` / ``segment_ids`` int32[B, 2, L]: per pair, row 0 the chosen and row 1 the
rejected sequence (``reward_model.encode_response``), each right-padded to ``data.seq_len``; one forward
scores all 2B rows and ``losses.bradley_terry_loss`` compares them. The backbone starts from
``initial_params`` (a policy, e.g. the SFT stage's, in a cascade) or from scratch; the head from zero.

After the last step the held-out pairwise accuracy (chosen scored strictly above rejected) is written to
``workdir/eval.json`` and returned on the context (``ctx.evaluation``).

Multi-process: every process reads the same global pair stream and puts its own devices' rows of each batch
on the mesh (``runtime.put_global_batch``), so the run trains on the same batches whatever the process count;
the held-out scores are gathered to every process (``RewardModelFn.score_ids``) and process 0 writes
``eval.json`` and prints.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from nemocascade import data as data_lib
from nemocascade import losses
from nemocascade import model as model_lib
from nemocascade import sharding as sharding_lib
from nemocascade.rewards import reward_model as rm
from nemocascade.rewards.thinking import split_thinking
from nemocascade.stages import policy, runtime
from nemocascade.train import make_optimizer

PAIR_KEYS = ("tokens", "segment_ids")
SIDES = ("chosen", "rejected")
TOO_LONG = ("raise", "truncate", "skip")


# ------------------------------------------------------------------------------------------------- loss
def make_reward_model_loss(cfg: model_lib.ModelConfig, *, margin: float = 0.0):
    """``loss_fn(params, batch, rng) -> (loss, metrics)`` for pair batches (see the module docstring).

    loss = Bradley-Terry ``mean -log sigmoid(r_chosen - r_rejected - margin)`` + the MoE auxiliary losses.
    """
    def loss_fn(params, batch, rng):
        del rng
        pairs, _, length = batch["tokens"].shape
        rewards, aux = rm.reward_scores_and_aux(params, cfg, batch["tokens"].reshape(2 * pairs, length),
                                                batch["segment_ids"].reshape(2 * pairs, length))
        rewards = rewards.reshape(pairs, 2)
        bt, bt_aux = losses.bradley_terry_loss(rewards[:, 0], rewards[:, 1], margin=margin)
        metrics = {"bt_loss": bt, "reward_mean": jnp.mean(rewards), **bt_aux, **policy.moe_metrics(aux)}
        return bt + aux["moe_aux_loss"] + aux["router_z_loss"], metrics
    return loss_fn


# ------------------------------------------------------------------------------------------------ pairs
def _answer_text(value: Any, field: str) -> str:
    """A response field as the answer text: a string (reasoning block dropped) or an assistant message
    ``{"role": "assistant", "content": str}`` (or a one-message list of it)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, Mapping):
        if value.get("role") != "assistant" or not isinstance(value.get("content"), str):
            raise ValueError(f"{field!r} must be a string or an assistant message with string content, "
                             f"got {value!r:.80}")
        value = value["content"]
    if not isinstance(value, str):
        raise ValueError(f"{field!r} must be a string (the answer), got {type(value).__name__}")
    split = split_thinking(value)
    if not split.closed:
        raise ValueError(f"{field!r} opens a reasoning block that it never closes")
    return split.answer


def pair_from_example(example: Mapping) -> dict:
    """A validated pair ``{**example, "chosen": answer, "rejected": answer}`` (ValueError otherwise)."""
    messages = example["messages"]
    if messages[-1]["role"] == "assistant":
        raise ValueError("the prompt ends with an assistant turn; 'chosen' and 'rejected' are the next turn")
    missing = [side for side in SIDES if side not in example]
    if missing:
        raise ValueError(f"a preference pair needs 'chosen' and 'rejected'; missing {missing}")
    return {**example, **{side: _answer_text(example[side], side) for side in SIDES}}


def read_pairs_jsonl(path: str, *, on_error: str = "raise") -> list[dict]:
    """Preference pairs from a JSONL file; a bad row raises ``JsonlError`` (``path:line``) or is skipped."""
    pairs = []
    for example in data_lib.read_jsonl(path, on_error=on_error):
        try:
            pairs.append(pair_from_example(example))
        except ValueError as e:
            line = int(example["origin"].rsplit(":", 1)[1])
            if on_error == "raise":
                raise data_lib.JsonlError(path, line, str(e)) from None
            logging.warning("skipping bad pair %s:%d: %s", path, line, e)
    if not pairs:
        raise ValueError(f"{path}: no usable preference pairs (see the warnings above)")
    return pairs


def toy_pairs(domain: str, split: str, n: int, *, seed: int) -> list[dict]:
    """``n`` pairs of a built-in toy domain's ``split`` (the domain must have chosen/rejected fields)."""
    examples = data_lib.toy_examples(domain, split, n, seed=seed)
    if examples and not all(side in examples[0] for side in SIDES):
        raise ValueError(f"toy domain {domain!r} has no preference pairs (chosen/rejected); use 'chat'")
    return [pair_from_example(e) for e in examples]


def train_pairs(data_cfg: ml_collections.ConfigDict, seed: int) -> list[dict]:
    if data_cfg.jsonl:
        return read_pairs_jsonl(data_cfg.jsonl, on_error=data_cfg.on_bad_row)
    return toy_pairs(data_cfg.domain, "train", data_cfg.num_pairs, seed=seed)


def heldout_pairs(config: ml_collections.ConfigDict) -> list[dict] | None:
    """Evaluation pairs: ``reward_model.eval_jsonl``, else the toy domain's heldout split (None: no eval)."""
    rm_cfg = config.reward_model
    if rm_cfg.eval_jsonl:
        return read_pairs_jsonl(rm_cfg.eval_jsonl, on_error=config.data.on_bad_row)
    if config.data.jsonl:
        return None
    return toy_pairs(config.data.domain, "heldout", rm_cfg.eval_pairs, seed=config.seed)


class EncodePair:
    """Pair -> ``{"tokens", "segment_ids"}`` int32[2, seq_len] (chosen, rejected), or None when skipped."""

    def __init__(self, tokenizer, *, seq_len: int, too_long: str):
        if too_long not in TOO_LONG:
            raise ValueError(f"data.too_long must be one of {TOO_LONG}, got {too_long!r}")
        self.tokenizer, self.seq_len, self.too_long = tokenizer, seq_len, too_long

    def __call__(self, pair: Mapping) -> dict | None:
        rows = [rm.encode_response(self.tokenizer, pair["messages"], pair[side]) for side in SIDES]
        longest = max(len(r) for r in rows)
        if longest > self.seq_len and self.too_long != "truncate":
            where = pair.get("origin") or pair.get("id", "a pair")
            if self.too_long == "raise":
                raise ValueError(f"{where}: a {longest}-token sequence is longer than data.seq_len={self.seq_len} "
                                 f"(raise seq_len, or set data.too_long to 'truncate' or 'skip')")
            logging.warning("%s: skipping a pair with a %d-token sequence (seq_len=%d)", where, longest,
                            self.seq_len)
            return None
        tokens, segment_ids = rm.pad_rows(rows, self.seq_len, self.tokenizer.pad_id)
        return {"tokens": tokens, "segment_ids": segment_ids}


def make_pair_dataset(pairs, tokenizer, *, seq_len: int, batch_size: int, seed: int,
                      too_long: str = "raise") -> grain.IterDataset:
    """Global batches ``{"tokens", "segment_ids"}`` int32[batch_size, 2, seq_len] of ``pairs``, reshuffled every
    epoch, forever; the iterator is checkpointable (exact resume).

    Every process reads the whole stream (no shard per process) and puts its own devices' rows on the mesh
    with ``runtime.put_global_batch``: a shard of pairs per process would make the global batch (and with
    ``too_long="skip"`` even its row count) depend on the process count."""
    dataset = grain.MapDataset.source(list(pairs))
    dataset = dataset.shuffle(seed=seed).repeat(None).map(EncodePair(tokenizer, seq_len=seq_len, too_long=too_long))
    dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0)).filter(lambda row: row is not None)
    return dataset.batch(batch_size, drop_remainder=True)


# ------------------------------------------------------------------------------------------- evaluation
def evaluate_pairs(scorer: rm.RewardModelFn, pairs) -> dict:
    """Pairwise accuracy (chosen scored strictly higher) of ``scorer`` on ``pairs``, the mean reward gap,
    and the accuracy per ``rejected_kind`` when the pairs have one (the toy ``chat`` domain does)."""
    rows = [rm.encode_response(scorer.tokenizer, p["messages"], p[side]) for p in pairs for side in SIDES]
    scores = scorer.score_ids(rows).reshape(-1, 2)
    correct = scores[:, 0] > scores[:, 1]
    result = {"pairwise_accuracy": float(correct.mean()), "num_pairs": len(pairs),
              "margin_mean": float(np.mean(scores[:, 0] - scores[:, 1])),
              "truncated_sequences": int(sum(len(r) > scorer.max_len for r in rows))}
    kinds = np.asarray([str(p.get("rejected_kind", "")) for p in pairs])
    if all(kinds):
        result["accuracy_by_rejected_kind"] = {str(k): float(correct[kinds == k].mean()) for k in sorted(set(kinds))}
    return result


# ------------------------------------------------------------------------------------------------ stage
@dataclasses.dataclass
class RewardModelContext(runtime.StageContext):
    """A stage context whose params are reward-model params; ``evaluation`` is set after training."""

    def init_params_fn(self, rng):
        return rm.init_reward_params(self.model_cfg, rng)


def build_context(config: ml_collections.ConfigDict, workdir: str) -> RewardModelContext:
    """``runtime.build_context`` with the head's shardings and an optimizer that also trains the head
    (and leaves the unused ``lm_head`` frozen)."""
    base = runtime.build_context(config, workdir)
    shapes = jax.eval_shape(lambda r: rm.init_reward_params(base.model_cfg, r), jax.random.PRNGKey(0))
    trainable = rm.trainable_mask(shapes, base.model_cfg, freeze_router=config.train.freeze_router)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    fields.update(param_shardings=rm.param_shardings(base.mesh, base.model_cfg),
                  optimizer=make_optimizer(runtime.optimizer_settings(config), trainable_mask=trainable))
    return RewardModelContext(**fields)


def run(config: ml_collections.ConfigDict, workdir: str, *, initial_params=None):
    """Trains ``config.train.steps`` Bradley-Terry steps in ``workdir`` (resuming if a checkpoint is there),
    then evaluates held-out pairs.

    Args:
      initial_params: policy params for the backbone (e.g. the SFT stage's); None = random init.
    Returns:
      ``(ctx, state)``; ``ctx.evaluation`` holds what ``eval.json`` holds (None without held-out pairs).
    """
    ctx = build_context(config, workdir)
    data_cfg = config.data
    tokenizer = data_lib.load_tokenizer(data_cfg.tokenizer)
    if tokenizer.vocab_size > ctx.model_cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but model.vocab_size is "
                         f"{ctx.model_cfg.vocab_size}")
    if data_cfg.seq_len > ctx.model_cfg.max_seq_len:
        raise ValueError(f"data.seq_len={data_cfg.seq_len} exceeds model.max_seq_len={ctx.model_cfg.max_seq_len}")
    runtime.check_sequence_split(ctx.mesh, data_cfg.seq_len, "data.seq_len")
    iterator = iter(make_pair_dataset(train_pairs(data_cfg, config.seed), tokenizer, seq_len=data_cfg.seq_len,
                                      batch_size=data_cfg.batch_size, seed=config.seed, too_long=data_cfg.too_long))
    if initial_params is not None:
        initial_params = jax.device_put(rm.init_reward_params(ctx.model_cfg, None, backbone=initial_params),
                                        ctx.param_shardings)
    state, state_shardings = runtime.init_or_restore_state(ctx, initial_params=initial_params,
                                                           data_iterator=iterator)
    batch_sharding = sharding_lib.batch_sharding(ctx.mesh)
    step_fn = runtime.build_step(ctx, make_reward_model_loss(ctx.model_cfg, margin=config.reward_model.margin),
                                 state_shardings, {k: batch_sharding for k in PAIR_KEYS})

    def next_batch(_state):
        batch = next(iterator)
        return runtime.put_global_batch({k: batch[k] for k in PAIR_KEYS}, batch_sharding), {}

    state = runtime.train_and_close(ctx, state=state, step_fn=step_fn, next_batch=next_batch, data_iterator=iterator,
                                    tokens_per_step=2 * data_cfg.batch_size * data_cfg.seq_len)
    ctx.evaluation = evaluate(config, ctx, state.params, tokenizer)
    return ctx, state


def evaluate(config: ml_collections.ConfigDict, ctx: RewardModelContext, params, tokenizer) -> dict | None:
    """Held-out pairwise accuracy -> ``workdir/eval.json`` and a console line; None without held-out pairs."""
    pairs = heldout_pairs(config)
    if pairs is None:
        logging.warning("[%s] no held-out pairs (set reward_model.eval_jsonl): skipping evaluation", ctx.name)
        return None
    scorer = rm.RewardModelFn(params, ctx.model_cfg, tokenizer, batch_size=config.reward_model.eval_batch_size,
                              max_len=config.data.seq_len, mesh=ctx.mesh)
    result = evaluate_pairs(scorer, pairs)
    if jax.process_index() == 0:  # every process computed the same result; one writes it
        with open(os.path.join(ctx.workdir, "eval.json"), "w") as f:
            json.dump({"reward_model": result}, f, indent=2, sort_keys=True)
        print(f"[{ctx.name}] held-out pairwise accuracy {result['pairwise_accuracy']:.3f} on {result['num_pairs']} "
              f"pairs (mean reward gap {result['margin_mean']:.3f})", flush=True)
    return result
