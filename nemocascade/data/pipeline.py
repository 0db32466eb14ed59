"""grain input pipelines: packed SFT batches and RL prompt batches, optionally sharded, checkpointable.

Both return a ``grain.IterDataset``; ``iter(dataset)`` is a ``grain.DatasetIterator`` whose
``get_state()`` / ``set_state()`` capture its exact position (``nemocascade.checkpoint`` saves it with the
train state). Order: shard (``examples[shard_index::shard_count]``) -> shuffle (reshuffled every epoch)
-> repeat ``num_epochs`` (None = forever) -> [SFT: tokenize, pack, batch, shift targets | RL: batch].

Sharding defaults to one disjoint shard per JAX process (``batch_size`` rows per process). The SFT stage
instead passes ``shard_index=0, shard_count=1`` so that every process reads the same global stream and the
global batch does not depend on the process count (``stages/runtime.put_global_batch`` explains why).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import grain
import jax
import numpy as np
from absl import logging

from nemocascade.data import packing, schema
from nemocascade.data.chat_template import render_tokens
from nemocascade.data.tokenizer import Tokenizer

TOO_LONG = ("raise", "truncate", "skip")


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _shard_args(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    _check_positive_int("shard_count", shard_count)
    if not isinstance(shard_index, (int, np.integer)) or not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index must be an int in [0, shard_count={shard_count}), got {shard_index!r}")
    return int(shard_index), int(shard_count)


def _ordered(examples: Sequence[dict], *, seed: int, shuffle: bool, num_epochs: int | None,
             shard_index: int | None, shard_count: int | None) -> grain.MapDataset:
    """This process's shard of ``examples``, shuffled per epoch and repeated."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if num_epochs is not None:
        _check_positive_int("num_epochs", num_epochs)
    shard_index, shard_count = _shard_args(shard_index, shard_count)
    dataset = grain.MapDataset.source(examples)[shard_index::shard_count]
    if len(dataset) == 0:
        raise ValueError(f"shard {shard_index} of {shard_count} is empty: only {len(examples)} examples")
    if shuffle:
        dataset = dataset.shuffle(seed=int(seed))
    return dataset.repeat(num_epochs)


class EncodeConversation:
    """Example -> ``{"tokens": int32[n], "model_written": int32[n]}`` (``render_tokens``), with the
    ``too_long`` policy for n > seq_len: ``raise`` (ValueError naming the example), ``truncate`` (keep the
    first seq_len ids) or ``skip`` (returns None, logged)."""

    def __init__(self, tokenizer: Tokenizer, *, seq_len: int, thinking: bool, too_long: str):
        self.tokenizer, self.seq_len, self.thinking, self.too_long = tokenizer, seq_len, thinking, too_long

    def __call__(self, example: Mapping) -> dict | None:
        ids, written = render_tokens(example["messages"], self.tokenizer, tools=example.get("tools"),
                                     thinking=self.thinking)
        if len(ids) > self.seq_len:
            where = schema.describe(example)
            if self.too_long == "raise":
                raise ValueError(f"{where}: the conversation is {len(ids)} tokens, longer than seq_len="
                                 f"{self.seq_len} (raise seq_len, or set too_long to 'truncate' or 'skip')")
            if self.too_long == "skip":
                logging.warning("%s: skipping a %d-token conversation (seq_len=%d)", where, len(ids), self.seq_len)
                return None
            ids, written = ids[:self.seq_len], written[:self.seq_len]
        return {packing.TOKENS: np.asarray(ids, np.int32), packing.WRITTEN: np.asarray(written, np.int32)}


def make_sft_dataset(examples: Sequence[dict], tokenizer: Tokenizer, *, seq_len: int, batch_size: int,
                     seed: int, shuffle: bool = True, num_epochs: int | None = None,
                     shard_index: int | None = None, shard_count: int | None = None, thinking: bool = True,
                     too_long: str = "raise", packing_bins: int | None = None,
                     read_threads: int = 0) -> grain.IterDataset:
    """Packed SFT batches from conversations with assistant turns.

    Yields ``{"tokens", "targets", "segment_ids", "positions"}: int32[batch_size, seq_len]`` and
    ``"loss_mask": float32[batch_size, seq_len]``: several whole conversations per row (``segment_ids``
    1.. per conversation, 0 = padding; ``positions`` restart at 0 per conversation); ``targets[t]`` is the
    next token of the same conversation (0 at its last token and on padding) and ``loss_mask[t]`` is 1
    exactly where that target is model-written (assistant completions and their ``<|im_end|>``).

    Args:
      examples: conversations (``schema.validate_example`` with an assistant turn); an example's optional
        ``tools`` are listed in its system turn.
      shard_index / shard_count: this process's shard (default ``jax.process_index()/process_count()``).
      thinking: render assistant turns in thinking mode (else non-thinking: reasoning dropped).
      too_long: ``raise`` | ``truncate`` | ``skip`` for a conversation longer than ``seq_len``.
      packing_bins: rows filled at once by the first-fit packer (default ``batch_size``).
      read_threads: grain read threads (0 = in the calling thread; the data are in memory).
    A finite ``num_epochs`` drops the last incomplete batch.
    """
    _check_positive_int("batch_size", batch_size)
    if not isinstance(seq_len, (int, np.integer)) or seq_len < 2:
        raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}")
    if too_long not in TOO_LONG:
        raise ValueError(f"too_long must be one of {TOO_LONG}, got {too_long!r}")
    if packing_bins is not None:
        _check_positive_int("packing_bins", packing_bins)
    for index, example in enumerate(examples):
        schema.validate_example(example, schema.describe(example, index), needs_assistant=True)
    dataset = _ordered(examples, seed=seed, shuffle=shuffle, num_epochs=num_epochs, shard_index=shard_index,
                       shard_count=shard_count)
    dataset = dataset.map(EncodeConversation(tokenizer, seq_len=int(seq_len), thinking=thinking,
                                             too_long=too_long))
    dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads))
    dataset = packing.pack(dataset, seq_len=int(seq_len), num_bins=packing_bins or batch_size, seed=int(seed),
                           shuffle_bins=shuffle)
    return dataset.batch(batch_size, drop_remainder=True).map(packing.to_train_batch)


def make_prompt_dataset(examples: Sequence[dict], *, batch_size: int, seed: int, shuffle: bool = True,
                        num_epochs: int | None = None, shard_index: int | None = None,
                        shard_count: int | None = None) -> grain.IterDataset:
    """Batches of RL prompt examples: each element is a ``list`` of ``batch_size`` example dicts (prompt
    conversations without an assistant turn). A finite ``num_epochs`` drops the last incomplete batch."""
    _check_positive_int("batch_size", batch_size)
    for index, example in enumerate(examples):
        schema.validate_example(example, schema.describe(example, index), prompt_only=True)
    dataset = _ordered(examples, seed=seed, shuffle=shuffle, num_epochs=num_epochs, shard_index=shard_index,
                       shard_count=shard_count)
    dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0))
    return dataset.batch(batch_size, drop_remainder=True, batch_fn=list)
