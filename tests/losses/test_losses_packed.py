"""Losses on packed rows (``segment_ids``): float64 numpy parity, and equality with the same responses one per row."""
import jax
import numpy as np
import pytest

import losses_numpy_reference as ref
from losses_testing import assert_close, logprobs
from nemocascade.losses import AGGREGATIONS, aggregate, grpo_loss, mopd_loss

LENGTH = 12


def _sequences(rng, count):
    """``count`` sequences of 2..4 tokens, each a prompt (mask 0) then a response (mask 1; one of them empty)."""
    sequences = []
    for k in range(count):
        size = int(rng.integers(2, 5))
        prompt = int(rng.integers(1, size))
        mask = np.zeros(size, np.float32)
        if k != 1:
            mask[prompt:] = 1.0
        sequences.append({"mask": mask, "lp": logprobs(rng, size), "old": logprobs(rng, size),
                          "teacher": logprobs(rng, size), "adv": np.float32(rng.normal())})
    return sequences


def _layout(sequences, rows_of_sequences):
    """Arrays [R, LENGTH] holding sequence ``rows_of_sequences[r]`` in row ``r`` (segment ids 1, 2, ..., 0 =
    padding, whose values are junk) and the per-token advantages."""
    rows = len(rows_of_sequences)
    arrays = {name: np.full((rows, LENGTH), np.nan, np.float32) for name in ("lp", "old", "teacher", "adv")}
    arrays["mask"] = np.zeros((rows, LENGTH), np.float32)
    arrays["segment_ids"] = np.zeros((rows, LENGTH), np.int32)
    where = {}
    for r, members in enumerate(rows_of_sequences):
        start = 0
        for segment, k in enumerate(members, start=1):
            seq = sequences[k]
            stop = start + len(seq["mask"])
            assert stop <= LENGTH
            for name in ("lp", "old", "teacher", "mask"):
                arrays[name][r, start:stop] = seq[name]
            arrays["adv"][r, start:stop] = seq["adv"]
            arrays["segment_ids"][r, start:stop] = segment
            where[k] = (r, start, stop)
            start = stop
    return arrays, where


def _packed_and_unpacked(seed):
    rng = np.random.default_rng(seed)
    sequences = _sequences(rng, 7)
    packed, packed_where = _layout(sequences, [[0, 1], [2, 3, 4], [5], [6]])
    unpacked, unpacked_where = _layout(sequences, [[k] for k in range(7)])
    return sequences, (packed, packed_where), (unpacked, unpacked_where)


def _value_and_grad(loss, arrays, aggregation, segment_ids, **inputs):
    """``loss(lp, **inputs, mask, aggregation, segment_ids)``'s value and gradient with respect to ``arrays["lp"]``."""
    def objective(lp):
        return loss(lp, **inputs, mask=arrays["mask"], aggregation=aggregation, segment_ids=segment_ids)
    (value, _), grad = jax.value_and_grad(objective, has_aux=True)(arrays["lp"])
    return value, np.asarray(grad)


def _grpo(arrays, aggregation, segment_ids):
    return _value_and_grad(grpo_loss, arrays, aggregation, segment_ids, old_logprobs=arrays["old"],
                           advantages=arrays["adv"], clip_eps_low=0.2, clip_eps_high=0.28)


def _mopd(arrays, aggregation, segment_ids):
    return _value_and_grad(mopd_loss, arrays, aggregation, segment_ids, rollout_logprobs=arrays["old"],
                           teacher_logprobs=arrays["teacher"], is_low=0.5, is_high=2.0)


def _finite(arrays):
    """The arrays with the padding's junk replaced by zeros (for the float64 reference, which skips it anyway)."""
    return {k: np.nan_to_num(v) if v.dtype == np.float32 else v for k, v in arrays.items()}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_packed_losses_match_numpy(aggregation, seed):
    _, (packed, _), _ = _packed_and_unpacked(seed)
    clean = _finite(packed)
    loss, grad = _grpo(packed, aggregation, packed["segment_ids"])
    expected_loss, expected_grad, _ = ref.grpo_loss(clean["lp"], clean["old"], clean["adv"], clean["mask"], 0.2, 0.28,
                                                    aggregation, segment_ids=clean["segment_ids"])
    assert_close(loss, expected_loss)
    assert_close(grad, expected_grad)
    loss, grad = _mopd(packed, aggregation, packed["segment_ids"])
    expected_loss, expected_grad, _ = ref.mopd_loss(clean["lp"], clean["old"], clean["teacher"], clean["mask"], 0.5,
                                                    2.0, aggregation, segment_ids=clean["segment_ids"])
    assert_close(loss, expected_loss)
    assert_close(grad, expected_grad)


@pytest.mark.parametrize("loss_fn", [_grpo, _mopd], ids=["grpo", "mopd"])
@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean"])
def test_packed_rows_train_like_one_response_per_row(loss_fn, aggregation):
    sequences, (packed, packed_where), (unpacked, unpacked_where) = _packed_and_unpacked(2)
    packed_loss, packed_grad = loss_fn(packed, aggregation, packed["segment_ids"])
    unpacked_loss, unpacked_grad = loss_fn(unpacked, aggregation, None)
    assert_close(packed_loss, unpacked_loss)
    for k in range(len(sequences)):
        (r, a, b), (u, c, d) = packed_where[k], unpacked_where[k]
        assert_close(packed_grad[r, a:b], unpacked_grad[u, c:d], err_msg=f"sequence {k}")
    # without segment_ids a packed row would be one sequence: seq_mean_token_mean then weighs rows, not responses
    if aggregation == "seq_mean_token_mean":
        row_loss, _ = loss_fn(packed, aggregation, None)
        assert abs(float(row_loss) - float(unpacked_loss)) > 1e-3


def test_dr_grpo_normaliser_is_that_of_the_rows_given():
    """``seq_mean_token_sum_norm`` divides by B * T of its layout: packing 7 responses into 4 rows scales it 7/4."""
    _, (packed, _), (unpacked, _) = _packed_and_unpacked(3)
    packed_loss, _ = _grpo(packed, "seq_mean_token_sum_norm", packed["segment_ids"])
    unpacked_loss, _ = _grpo(unpacked, "seq_mean_token_sum_norm", None)
    assert_close(packed_loss, unpacked_loss * 7 / 4)


def test_segment_values_do_not_matter_only_their_runs():
    rng = np.random.default_rng(4)
    per_token, mask = rng.normal(size=(2, 6)).astype(np.float32), np.ones((2, 6), np.float32)
    ids = np.array([[1, 1, 2, 2, 2, 0], [1, 2, 3, 3, 3, 3]], np.int32)
    relabelled = np.array([[7, 7, 3, 3, 3, 9], [5, 4, 0, 0, 0, 0]], np.int32)
    expected = ref.aggregation_weights(mask, "seq_mean_token_mean", ids) * per_token
    for segment_ids in (ids, relabelled):
        assert_close(aggregate(per_token, mask, "seq_mean_token_mean", segment_ids), expected.sum())
        assert_close(jax.jit(aggregate, static_argnums=2)(per_token, mask, "seq_mean_token_mean", segment_ids),
                     expected.sum())


def test_bad_segment_ids_are_refused():
    per_token, mask = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="segment_ids: expected an integer array"):
        aggregate(per_token, mask, "seq_mean_token_mean", np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"segment_ids: expected shape \(2, 3\)"):
        aggregate(per_token, mask, "seq_mean_token_mean", np.ones((2, 4), np.int32))
