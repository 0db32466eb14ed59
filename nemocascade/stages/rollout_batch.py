"""Turning rollouts into a fixed-shape training batch (shared by GRPO, MOPD and RLHF).

Row layout follows ``Rollouts``: prompt, response, padding. A forward pass over ``tokens`` predicts
token ``t + 1`` at position ``t``, so every per-token array here is shifted by one against ``tokens``:
``targets[:, t] = tokens[:, t + 1]``, ``rollout_logprobs[:, t]`` is the sampler's log-prob of that target
and ``mask[:, t]`` is 1 where that target is a sampled response token. Rows are padded to ``width``
tokens so the jitted step compiles once per stage.

Sequence packing (``rl.pack_rollouts``, ``pack_rollout_batch``): responses are mostly far shorter than the budget
the rows are sized for (``max_prompt_tokens + max_new_tokens``), so one sample per row trains mostly padding.
Packing moves whole samples into fewer rows of the same width, each with its own segment id and positions, so
every token's log-prob is the one it has in its own row (attention and the Mamba-2 state do not cross segments;
tested against the unpacked batch and the sampler). The per-sample quantities (advantages, weights, a MOPD
teacher's domain) reach the tokens through ``index`` (``per_token``), and the losses average per response by
segment (``losses.aggregate(..., segment_ids)``). The row count takes one of ``MAX_PACKED_SHAPES`` values and the
train step runs as many micro-batches of the unpacked micro-batch size as it needs, so the memory per
micro-batch is the unpacked one's and the step compiles a few times per stage, not once.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nemocascade.rollout import Rollouts


def rollout_batch(rollouts: Rollouts, *, width: int) -> dict[str, np.ndarray]:
    """Builds ``{tokens, targets, segment_ids, positions, mask, rollout_logprobs}`` (numpy, [N, width]).

    Args:
      rollouts: the sampled rows (their length must not exceed ``width``).
      width: fixed row length in tokens.
    """
    n, length = rollouts.tokens.shape
    if length > width:
        raise ValueError(f"rollout rows have {length} tokens but the training width is {width}; raise "
                         f"rollout.max_prompt_tokens or lower rollout.max_new_tokens")
    tokens = np.zeros((n, width), np.int32)
    tokens[:, :length] = rollouts.tokens
    segment_ids = np.zeros((n, width), np.int32)
    segment_ids[:, :length] = rollouts.segment_ids()
    response_mask = np.zeros((n, width), np.float32)
    response_mask[:, :length] = rollouts.response_mask()
    logprobs = np.zeros((n, width), np.float32)
    logprobs[:, :length] = rollouts.logprobs

    targets = np.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    mask = np.zeros_like(response_mask)
    mask[:, :-1] = response_mask[:, 1:]
    rollout_logprobs = np.zeros_like(logprobs)
    rollout_logprobs[:, :-1] = logprobs[:, 1:]
    positions = np.broadcast_to(np.arange(width, dtype=np.int32), (n, width)).copy()
    return {"tokens": tokens, "targets": targets, "segment_ids": segment_ids, "positions": positions,
            "mask": mask, "rollout_logprobs": rollout_logprobs}


def sample_index(batch: dict[str, np.ndarray]) -> np.ndarray:
    """int32[N, width] of a ``rollout_batch`` (one sample per row): the row's index on its prompt and response
    tokens, -1 on padding."""
    rows = np.arange(batch["segment_ids"].shape[0], dtype=np.int32)[:, None]
    return np.where(batch["segment_ids"] > 0, rows, -1).astype(np.int32)


def per_token(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[N]`` (one per sample) spread over the tokens: ``values[index]`` where ``index >= 0``, else 0."""
    values = np.asarray(values)
    return np.where(index >= 0, values[np.maximum(index, 0)], np.zeros((), values.dtype))


# A packed batch takes one of at most this many row counts per stage, so the train step compiles at most this often.
MAX_PACKED_SHAPES = 8


def packed_row_count(needed: int, *, num_samples: int, micro_batch_rows: int, row_shards: int) -> int:
    """The row count of a packed batch that needs ``needed`` rows (of the unpacked ``num_samples``).

    Rows go in units of ``row_shards`` (the mesh's batch split; it divides ``micro_batch_rows``, which divides
    ``num_samples``), rounded up to one of ``MAX_PACKED_SHAPES`` evenly spaced unit counts, and then to ``n``
    equal micro-batches of at most ``micro_batch_rows`` rows (``n`` = the fewest that hold them), so that
    ``make_train_step(micro_batch_rows=...)`` splits it evenly. At most ``num_samples``.
    """
    total_units, max_units = num_samples // row_shards, micro_batch_rows // row_shards
    granule = -(-total_units // MAX_PACKED_SHAPES)
    units = min(-(-needed // (row_shards * granule)) * granule, total_units)
    micro_batches = -(-units // max_units)
    return micro_batches * -(-units // micro_batches) * row_shards


def first_fit_decreasing(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Bins (lists of item indices, in placement order) of total length <= ``width``: items longest first
    (ties by index), each into the first bin with room. Deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    free = np.zeros(0, np.int64)
    bins: list[list[int]] = []
    for i in order:
        room = np.flatnonzero(free >= lengths[i])
        if room.size:
            bins[room[0]].append(i)
            free[room[0]] -= lengths[i]
        else:
            bins.append([i])
            free = np.append(free, width - lengths[i])
    return bins


def pack_rollout_batch(batch: dict[str, np.ndarray], *, micro_batch_rows: int, row_shards: int,
                       num_samples: int | None = None,
                       keep: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Packs a ``rollout_batch`` (one sample per row) into fewer rows of the same width (sequence packing).

    Each sample (its prompt and response: the tokens with ``segment_ids > 0``) stays whole and is copied with all
    of its per-token arrays into a row of ``first_fit_decreasing``; in its row it gets segment id ``k + 1`` (the
    ``k``-th sample placed there) and positions ``0 ..``, so attention, the Mamba-2 state and the positions see
    each sample alone, exactly as in its own row. Its targets, mask and log-probs move with it (the target after
    a sample's last token is masked, as in its own row). The row count is ``packed_row_count`` (rows of padding
    only are added to reach it).

    Args:
      batch: name -> [N, width] arrays from ``rollout_batch`` (every array of that shape is packed).
      micro_batch_rows, row_shards: rows per micro-batch of the unpacked batch, and the mesh's batch split
        (``packed_row_count``).
      num_samples: the unpacked batch size that the row counts are bucketed by (default: ``batch``'s rows; a
        subset of a step's samples passes the step's, so that its row counts are the step's few).
      keep: bool[N] or None (all): the samples to pack; the others (e.g. DAPO-filtered groups, whose loss weight
        is 0) get no tokens, so they cost the step nothing. With none kept the batch is one unit of padding rows.
    Returns:
      ``(packed, index)``: the packed arrays [R, width] and int32[R, width] ``index`` (the sample each token came
      from, -1 on padding; see ``per_token``).
    """
    segment_ids = batch["segment_ids"]
    width = segment_ids.shape[1]
    lengths = (segment_ids > 0).sum(axis=1)
    packed_samples = np.arange(len(lengths)) if keep is None else np.flatnonzero(keep)
    bins = [[int(packed_samples[i]) for i in members]
            for members in first_fit_decreasing(lengths[packed_samples], width)]
    rows = packed_row_count(max(len(bins), 1), num_samples=num_samples or len(segment_ids),
                            micro_batch_rows=micro_batch_rows, row_shards=row_shards)
    packed = {name: np.zeros((rows, width), value.dtype) for name, value in batch.items()}
    index = np.full((rows, width), -1, np.int32)
    for row, members in enumerate(bins):
        start = 0
        for segment, sample in enumerate(members, start=1):
            stop = start + int(lengths[sample])
            for name, value in batch.items():
                packed[name][row, start:stop] = value[sample, :stop - start]
            packed["segment_ids"][row, start:stop] = segment
            packed["positions"][row, start:stop] = np.arange(stop - start)
            index[row, start:stop] = sample
            start = stop
    return packed, index


def sample_spans(index: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """``{sample: (row, start, stop)}``: where each sample of ``index`` (see ``per_token``) stands, in one pass over
    it (every layout here keeps a sample whole, in one row)."""
    flat = index.reshape(-1)
    runs = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    width = index.shape[1]
    spans = {}
    for begin, end in zip(runs[:-1], runs[1:]):
        sample = int(flat[begin])
        if sample >= 0:
            row, start = divmod(int(begin), width)
            spans[sample] = (row, start, start + int(end - begin))
    return spans


def gather_samples(batch: dict[str, np.ndarray], index: np.ndarray, samples: Sequence[int]) -> dict[str, np.ndarray]:
    """``samples`` (ids of ``index``, see ``per_token``) one per row, laid out as ``rollout_batch`` lays them out:
    row ``i`` holds sample ``samples[i]``'s values of every [rows, width] array of ``batch`` from position 0, with
    segment id 1 and positions 0, 1, ... (e.g. to pack a subset of a packed batch again)."""
    spans = sample_spans(index)
    gathered = {name: np.zeros((len(samples), index.shape[1]), value.dtype) for name, value in batch.items()}
    for row, sample in enumerate(samples):
        source, start, stop = spans[int(sample)]
        for name, value in batch.items():
            gathered[name][row, :stop - start] = value[source, start:stop]
        gathered["segment_ids"][row, :stop - start] = 1
        gathered["positions"][row, :stop - start] = np.arange(stop - start)
    return gathered


def scatter_samples(target: np.ndarray, index: np.ndarray, values: np.ndarray, values_index: np.ndarray) -> None:
    """Writes ``values`` (a batch whose tokens belong to the samples of ``values_index``) into ``target`` at the
    same samples' tokens of ``index`` (``sample_spans`` of both; a sample must have one length in both)."""
    target_spans = sample_spans(index)
    for sample, (row, start, stop) in sample_spans(values_index).items():
        target_row, target_start, target_stop = target_spans[sample]
        if target_stop - target_start != stop - start:
            raise ValueError(f"sample {sample} has {stop - start} tokens in values but "
                             f"{target_stop - target_start} in target")
        target[target_row, target_start:target_stop] = values[row, start:stop]


def pack_samples(batch: dict[str, np.ndarray], index: np.ndarray, samples: np.ndarray, *, num_samples: int,
                 row_shards: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The ``samples`` (ids of ``index``, of a step's ``num_samples``) alone, packed into rows of the batch's width
    (``gather_samples`` then ``pack_rollout_batch`` with one micro-batch: one of ``MAX_PACKED_SHAPES`` row counts
    per step). Returns (the packed arrays, the sample id of each of their tokens, -1 on padding)."""
    packed, packed_index = pack_rollout_batch(gather_samples(batch, index, samples), micro_batch_rows=num_samples,
                                              row_shards=row_shards, num_samples=num_samples)
    return packed, np.where(packed_index >= 0, samples[np.maximum(packed_index, 0)], -1).astype(np.int32)
