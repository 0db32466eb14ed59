"""Packing tokenized conversations into fixed-length rows and deriving next-token targets per segment.

Packing uses grain's first-fit packer: each row holds whole conversations (never split), tagged with
segment ids ``1, 2, ...`` (``0`` = padding) and positions that restart at 0 in every segment. Targets are
then shifted *within* a segment, so no position is ever asked to predict a token of another conversation.
"""
from __future__ import annotations

import grain
import numpy as np

TOKENS = "tokens"
WRITTEN = "model_written"
TRAIN_BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")


def pack(dataset: grain.IterDataset, *, seq_len: int, num_bins: int, seed: int,
         shuffle_bins: bool) -> grain.IterDataset:
    """First-fit packs elements ``{"tokens": int32[n], "model_written": int32[n]}`` (n <= seq_len) into
    rows ``{"tokens", "tokens_segment_ids", "tokens_positions", "model_written"}``, each int32[seq_len],
    zero-padded. ``num_bins`` rows are filled at a time (more bins, less padding)."""
    return grain.experimental.FirstFitPackIterDataset(
        dataset, length_struct={TOKENS: seq_len, WRITTEN: seq_len}, num_packing_bins=num_bins, seed=seed,
        shuffle_bins=shuffle_bins, meta_features=(WRITTEN,))


def shift_within_segments(tokens: np.ndarray, segment_ids: np.ndarray,
                          model_written: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Next-token targets and their loss mask for packed rows (any leading shape, last axis = length).

    targets[..., t] = tokens[..., t + 1] when t + 1 is in the same (non-padding) segment, else 0;
    loss_mask[..., t] = model_written[..., t + 1] there (1.0 iff the target is a model-written token), else 0.
    Returns (int32 targets, float32 loss_mask) with the shape of ``tokens``.
    """
    same = (segment_ids[..., 1:] == segment_ids[..., :-1]) & (segment_ids[..., :-1] != 0)
    targets = np.zeros_like(tokens, dtype=np.int32)
    loss_mask = np.zeros(tokens.shape, dtype=np.float32)
    targets[..., :-1] = np.where(same, tokens[..., 1:], 0)
    loss_mask[..., :-1] = np.where(same, model_written[..., 1:], 0)
    return targets, loss_mask


def to_train_batch(packed: dict) -> dict:
    """Packed rows (as produced by ``pack``, possibly batched) -> the train batch
    ``{"tokens", "targets", "segment_ids", "positions"}: int32[..., L]`` and ``"loss_mask": float32[..., L]``."""
    tokens = np.asarray(packed[TOKENS], np.int32)
    segment_ids = np.asarray(packed[f"{TOKENS}_segment_ids"], np.int32)
    targets, loss_mask = shift_within_segments(tokens, segment_ids, np.asarray(packed[WRITTEN]))
    return {"tokens": tokens, "targets": targets, "loss_mask": loss_mask, "segment_ids": segment_ids,
            "positions": np.asarray(packed[f"{TOKENS}_positions"], np.int32)}
