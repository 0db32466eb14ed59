"""Targets and loss masks shifted within packed segments, against a per-token loop reference."""
import numpy as np

from nemocascade.data.packing import TRAIN_BATCH_KEYS, shift_within_segments, to_train_batch


def _random_packed_rows(rng, rows, length):
    segment_ids = np.zeros((rows, length), np.int32)
    for r in range(rows):
        start, segment = 0, 1
        while start < length:
            size = int(rng.integers(1, 9))
            if start + size > length or rng.random() < 0.1:
                break
            segment_ids[r, start:start + size] = segment
            start, segment = start + size, segment + 1
    tokens = np.where(segment_ids > 0, rng.integers(1, 1000, (rows, length)), 0).astype(np.int32)
    written = np.where(segment_ids > 0, rng.integers(0, 2, (rows, length)), 0).astype(np.int32)
    return tokens, segment_ids, written


def _reference(tokens, segment_ids, written):
    targets = np.zeros(tokens.shape, np.int64)
    mask = np.zeros(tokens.shape, np.float64)
    for r in range(tokens.shape[0]):
        for t in range(tokens.shape[1] - 1):
            if segment_ids[r, t] != 0 and segment_ids[r, t + 1] == segment_ids[r, t]:
                targets[r, t] = tokens[r, t + 1]
                mask[r, t] = written[r, t + 1]
    return targets, mask


def test_shift_matches_loop_reference():
    rng = np.random.default_rng(0)
    tokens, segment_ids, written = _random_packed_rows(rng, 16, 40)
    targets, mask = shift_within_segments(tokens, segment_ids, written)
    ref_targets, ref_mask = _reference(tokens, segment_ids, written)
    assert targets.dtype == np.int32 and mask.dtype == np.float32
    np.testing.assert_array_equal(targets, ref_targets)
    np.testing.assert_array_equal(mask, ref_mask)
    # A segment's last token predicts nothing: it never targets the next segment's first token.
    last = (segment_ids[:, :-1] != 0) & (segment_ids[:, 1:] != segment_ids[:, :-1])
    assert not targets[:, :-1][last].any() and not mask[:, :-1][last].any()


def test_adjacent_segments_with_identical_tokens_stay_separate():
    tokens = np.array([[5, 6, 5, 6, 0]], np.int32)
    segment_ids = np.array([[1, 1, 2, 2, 0]], np.int32)
    targets, mask = shift_within_segments(tokens, segment_ids, np.ones_like(tokens))
    np.testing.assert_array_equal(targets, [[6, 0, 6, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 0, 1, 0, 0]])


def test_to_train_batch_keys_and_dtypes():
    rng = np.random.default_rng(1)
    tokens, segment_ids, written = _random_packed_rows(rng, 2, 12)
    positions = np.zeros_like(tokens)
    batch = to_train_batch({"tokens": tokens, "tokens_segment_ids": segment_ids, "tokens_positions": positions,
                            "model_written": written})
    assert tuple(sorted(batch)) == tuple(sorted(TRAIN_BATCH_KEYS))
    assert {k: v.dtype for k, v in batch.items()} == {"tokens": np.int32, "targets": np.int32,
                                                      "loss_mask": np.float32, "segment_ids": np.int32,
                                                      "positions": np.int32}
