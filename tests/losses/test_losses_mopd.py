"""mopd_advantages and mopd_loss: float64 numpy parity, the hard gate, masking invariances, errors."""
import jax
import numpy as np
import pytest

import losses_numpy_reference as ref
from losses_testing import TOKEN_SHAPES, assert_close, garbage_outside, logprobs, response_mask
from nemocascade.losses import AGGREGATIONS, mopd_advantages, mopd_loss


def _batch(shape, seed):
    """Trainer log-probs, sampler log-probs off by N(0, 0.6) (so ratios leave [0.5, 2]), teacher, mask."""
    rng = np.random.default_rng(seed)
    lp = logprobs(rng, shape)
    rollout = (lp + 0.6 * rng.normal(size=shape)).astype(np.float32)
    teacher = logprobs(rng, shape)
    return lp, rollout, teacher, response_mask(rng, *shape)


def _loss_and_grad(lp, rollout, teacher, mask, **kwargs):
    (loss, aux), grad = jax.value_and_grad(lambda x: mopd_loss(x, rollout, teacher, mask, **kwargs),
                                           has_aux=True)(lp)
    return loss, aux, grad


def test_advantages_match_numpy_and_carry_no_gradient():
    _, rollout, teacher, mask = _batch((4, 6), seed=0)
    expected = (teacher.astype(np.float64) - rollout) * mask
    assert_close(mopd_advantages(teacher, rollout, mask), expected)
    grads = jax.grad(lambda t, s: mopd_advantages(t, s, mask).sum(), argnums=(0, 1))(teacher, rollout)
    assert all(np.all(np.asarray(g) == 0.0) for g in grads)


def test_advantages_are_exactly_zero_outside_the_mask_even_for_junk():
    _, rollout, teacher, mask = _batch((4, 6), seed=1)
    rng = np.random.default_rng(0)
    advantages = np.asarray(mopd_advantages(garbage_outside(teacher, mask, rng),
                                            garbage_outside(rollout, mask, rng), mask))
    assert np.all(advantages[mask == 0] == 0.0)
    assert_close(advantages, (teacher.astype(np.float64) - rollout) * mask)


@pytest.mark.parametrize("shape", TOKEN_SHAPES)
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_mopd_loss_matches_numpy(shape, aggregation):
    lp, rollout, teacher, mask = _batch(shape, seed=shape[1])
    loss, aux, grad = _loss_and_grad(lp, rollout, teacher, mask, aggregation=aggregation)
    expected_loss, expected_grad, gated = ref.mopd_loss(lp, rollout, teacher, mask, 0.5, 2.0, aggregation)
    assert_close(loss, expected_loss)
    assert_close(grad, expected_grad)
    assert_close(aux["gated_fraction"], gated)
    count = max(mask.sum(), 1.0)
    # advantage_mean is minus the sampled reverse KL  E_student[log student - log teacher].
    assert_close(aux["advantage_mean"], -((rollout.astype(np.float64) - teacher) * mask).sum() / count)
    assert_close(aux["num_tokens"], mask.sum())


def test_gate_is_exercised_by_the_parity_inputs():
    lp, rollout, teacher, mask = _batch((5, 11), seed=11)
    _, _, gated = ref.mopd_loss(lp, rollout, teacher, mask, 0.5, 2.0, "token_mean")
    assert 0.1 < gated < 0.9


def test_numpy_reference_gradient_matches_finite_differences():
    lp, rollout, teacher, mask = _batch((3, 5), seed=5)
    lp = lp.astype(np.float64)

    def loss(x):  # the weight stays at its value for lp (stop_gradient)
        return ref.mopd_loss(x, rollout, teacher, mask, 0.5, 2.0, "seq_mean_token_mean", weight_logprobs=lp)[0]

    expected = ref.mopd_loss(lp, rollout, teacher, mask, 0.5, 2.0, "seq_mean_token_mean")[1]
    np.testing.assert_allclose(expected, ref.finite_difference(loss, lp), rtol=1e-6, atol=1e-8)


def test_weight_is_gated_not_clamped():
    """One token per row: ratios 0.4, 0.55, 1.3, 1.95, 2.5 -> weights 0, 0.55, 1.3, 1.95, 0."""
    ratios = np.array([0.4, 0.55, 1.3, 1.95, 2.5])
    lp = np.full((5, 1), -1.0, np.float32)
    rollout = (lp - np.log(ratios)[:, None]).astype(np.float32)
    teacher = np.full((5, 1), -0.5, np.float32)
    mask = np.ones((5, 1), np.float32)
    _, aux, grad = _loss_and_grad(lp, rollout, teacher, mask, aggregation="seq_mean_token_sum_norm")
    exact_ratios = np.exp(lp[:, 0].astype(np.float64) - rollout[:, 0])
    advantages = teacher[:, 0].astype(np.float64) - rollout[:, 0]
    weights = np.where((exact_ratios >= 0.5) & (exact_ratios <= 2.0), exact_ratios, 0.0)
    assert list(weights > 0) == [False, True, True, True, False]
    assert_close(grad[:, 0], -weights * advantages / 5)
    assert_close(aux["gated_fraction"], 2 / 5)
    assert_close(aux["importance_weight_mean"], weights.mean())


def test_on_policy_gradient_is_the_reverse_kl_policy_gradient():
    """logprobs == rollout: weight 1, so d loss / d lp = -(teacher - lp) times the aggregation weights."""
    lp, _, teacher, mask = _batch((4, 7), seed=3)
    _, aux, grad = _loss_and_grad(lp, lp, teacher, mask, aggregation="seq_mean_token_mean")
    weights = ref.aggregation_weights(mask, "seq_mean_token_mean")
    assert_close(grad, -(teacher.astype(np.float64) - lp) * weights)
    assert float(aux["gated_fraction"]) == 0.0


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_padding_beyond_the_mask_changes_nothing(aggregation):
    lp, rollout, teacher, mask = _batch((4, 9), seed=9)
    rng = np.random.default_rng(1)
    clean = _loss_and_grad(lp, rollout, teacher, mask, aggregation=aggregation)
    dirty = _loss_and_grad(garbage_outside(lp, mask, rng), garbage_outside(rollout, mask, rng),
                           garbage_outside(teacher, mask, rng), mask, aggregation=aggregation)
    assert_close(dirty[0], clean[0], rtol=0, atol=0)
    assert_close(dirty[2], clean[2], rtol=0, atol=0)
    for name in clean[1]:
        assert_close(dirty[1][name], clean[1][name], rtol=0, atol=0, err_msg=name)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_empty_mask_is_finite_and_zero(aggregation):
    lp, rollout, teacher, mask = _batch((3, 4), seed=0)
    loss, aux, grad = _loss_and_grad(lp, rollout, teacher, np.zeros_like(mask), aggregation=aggregation)
    assert float(loss) == 0.0
    assert np.all(np.asarray(grad) == 0.0)
    assert all(np.isfinite(float(value)) for value in aux.values())


def test_rollout_and_teacher_get_no_gradient():
    lp, rollout, teacher, mask = _batch((3, 4), seed=2)
    grads = jax.grad(lambda r, t: mopd_loss(lp, r, t, mask)[0], argnums=(0, 1))(rollout, teacher)
    assert all(np.all(np.asarray(g) == 0.0) for g in grads)


@pytest.mark.parametrize("changes, error, match", [
    ({"aggregation": "mean"}, ValueError, "aggregation: expected one of"),
    ({"is_low": 3.0}, ValueError, "is_low: expected is_low <= is_high"),
    ({"is_high": -1.0}, ValueError, "is_high"),
    ({"teacher_logprobs": np.zeros((2, 2), np.float32)}, ValueError, "teacher_logprobs: expected shape"),
    ({"mask": np.ones((2, 3, 1))}, ValueError, r"mask: expected a 2-D array \[B, T\]"),
])
def test_mopd_loss_bad_arguments(changes, error, match):
    arguments = dict(logprobs=np.zeros((2, 3), np.float32), rollout_logprobs=np.zeros((2, 3), np.float32),
                     teacher_logprobs=np.zeros((2, 3), np.float32), mask=np.ones((2, 3), np.float32))
    with pytest.raises(error, match=match):
        mopd_loss(**{**arguments, **changes})


def test_mopd_advantages_bad_arguments():
    with pytest.raises(ValueError, match="student_logprobs: expected shape"):
        mopd_advantages(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), np.ones((2, 3)))
