"""group_advantages and grpo_loss: float64 numpy parity, on-policy = REINFORCE, masking invariances, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_numpy_reference as ref
from losses_testing import TOKEN_SHAPES, assert_close, garbage_outside, logprobs, response_mask
from nemocascade.losses import AGGREGATIONS, group_advantages, grpo_loss, token_logprobs


def _batch(shape, seed, *, per_token_advantages=False, off_policy=0.3):
    """Random GRPO inputs; ``off_policy`` is the scale of the old/new log-prob gap (so some tokens clip)."""
    rng = np.random.default_rng(seed)
    lp = logprobs(rng, shape)
    old = (lp + off_policy * rng.normal(size=shape)).astype(np.float32)
    adv_shape = shape if per_token_advantages else shape[:1]
    advantages = rng.normal(size=adv_shape).astype(np.float32)
    ref_lp = logprobs(rng, shape)
    return lp, old, advantages, response_mask(rng, *shape), ref_lp


def _loss_and_grad(lp, old, advantages, mask, **kwargs):
    def objective(x):
        return grpo_loss(x, old, advantages, mask, **kwargs)
    (loss, aux), grad = jax.value_and_grad(objective, has_aux=True)(lp)
    return loss, aux, grad


# ---------------------------------------------------------------- group_advantages

@pytest.mark.parametrize("group_size", [1, 4, 5])
@pytest.mark.parametrize("normalize_std", [True, False])
def test_group_advantages_match_numpy(group_size, normalize_std):
    rng = np.random.default_rng(group_size)
    rewards = rng.normal(size=3 * group_size).astype(np.float32)
    expected = ref.group_advantages(rewards, group_size, normalize_std, 1e-6)
    actual = group_advantages(rewards, group_size, normalize_std=normalize_std)
    assert actual.shape == rewards.shape and actual.dtype == jnp.float32
    assert_close(actual, expected)


def test_group_advantages_of_binary_integer_rewards():
    rewards = np.array([1, 0, 0, 0, 1, 1, 0, 1], np.int32)
    expected = ref.group_advantages(rewards, 4, True, 1e-3)
    assert_close(group_advantages(rewards, 4, eps=1e-3), expected)
    assert_close(expected[:4], [0.75 / (np.sqrt(0.1875) + 1e-3)] + [-0.25 / (np.sqrt(0.1875) + 1e-3)] * 3)


@pytest.mark.parametrize("value, group_size", [(0.1, 3), (0.9, 5), (0.7, 16), (2.2, 3), (1.0, 4)])
def test_uniform_groups_get_exactly_zero_advantage(value, group_size):
    """Including values whose float32 mean is off by an ulp (0.1 x 3, 0.9 x 5, ...)."""
    rewards = np.concatenate([np.full(group_size, value), np.arange(group_size)]).astype(np.float32)
    for normalize_std in (True, False):
        advantages = np.asarray(group_advantages(rewards, group_size, normalize_std=normalize_std))
        assert np.all(advantages[:group_size] == 0.0)
        expected = ref.group_advantages(rewards[group_size:], group_size, normalize_std, 1e-6)
        assert_close(advantages[group_size:], expected)


def test_equal_rewards_give_zero_advantage_and_zero_gradient():
    rewards = np.array([0.1, 0.1, 0.1, 1.0, 0.0, 0.2], np.float32)  # group 0 uniform, group 1 not
    advantages = group_advantages(rewards, 3)
    assert np.all(np.asarray(advantages[:3]) == 0.0)
    assert np.all(np.asarray(advantages[3:]) != 0.0)
    rng = np.random.default_rng(0)
    lp = logprobs(rng, (6, 4))
    mask = np.ones((6, 4), np.float32)
    for aggregation in AGGREGATIONS:
        _, _, grad = _loss_and_grad(lp, lp, advantages, mask, aggregation=aggregation)
        assert np.all(np.asarray(grad[:3]) == 0.0)
        assert np.all(np.abs(np.asarray(grad[3:])) > 0.0)


@pytest.mark.parametrize("rewards, group_size, kwargs, error, match", [
    (np.zeros(7), 2, {}, ValueError, "not a multiple of group_size"),
    (np.zeros((2, 4)), 4, {}, ValueError, r"rewards: expected a 1-D array \[N\]"),
    (np.zeros(4), 0, {}, ValueError, "group_size"),
    (np.zeros(4), 2.0, {}, TypeError, "group_size"),
    (np.zeros(4), 2, {"eps": 0.0}, ValueError, "eps"),
    (np.zeros(4), 2, {"normalize_std": 1}, TypeError, "normalize_std"),
    (np.array(["a", "b"]), 2, {}, TypeError, "rewards"),
])
def test_group_advantages_bad_arguments(rewards, group_size, kwargs, error, match):
    with pytest.raises(error, match=match):
        group_advantages(rewards, group_size, **kwargs)


# ---------------------------------------------------------------- grpo_loss vs numpy

@pytest.mark.parametrize("shape", TOKEN_SHAPES)
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("per_token_advantages", [False, True])
def test_grpo_loss_matches_numpy(shape, aggregation, per_token_advantages):
    lp, old, advantages, mask, _ = _batch(shape, seed=shape[1], per_token_advantages=per_token_advantages)
    kwargs = dict(clip_eps_low=0.2, clip_eps_high=0.28, aggregation=aggregation)
    loss, aux, grad = _loss_and_grad(lp, old, advantages, mask, **kwargs)
    expected_loss, expected_grad, clip_fraction = ref.grpo_loss(lp, old, advantages, mask, 0.2, 0.28, aggregation)
    assert_close(loss, expected_loss)
    assert_close(grad, expected_grad)
    assert_close(aux["clip_fraction"], clip_fraction)
    ratio = np.exp(lp.astype(np.float64) - old)
    assert_close(aux["ratio_mean"], (ratio * mask).sum() / max(mask.sum(), 1))
    assert_close(aux["approx_kl"], ((ratio - 1 - np.log(ratio)) * mask).sum() / max(mask.sum(), 1))


def test_clipping_is_exercised_by_the_parity_inputs():
    lp, old, advantages, mask, _ = _batch((5, 11), seed=11)
    _, _, clip_fraction = ref.grpo_loss(lp, old, advantages, mask, 0.2, 0.28, "token_mean")
    assert 0.1 < clip_fraction < 0.9


def test_asymmetric_clip_range():
    """eps_low=0.1, eps_high=0.3: ratios 0.85/0.95 (A<0) and 1.25/1.35 (A>0); the outer one of each clips."""
    ratios = np.array([0.85, 0.95, 1.25, 1.35])
    advantages = np.array([-1.0, -1.0, 1.0, 1.0], np.float32)
    lp = np.full((4, 1), -1.0, np.float32)
    old = (lp - np.log(ratios)[:, None]).astype(np.float32)
    mask = np.ones((4, 1), np.float32)
    loss, aux, grad = _loss_and_grad(lp, old, advantages, mask, clip_eps_low=0.1, clip_eps_high=0.3,
                                     aggregation="seq_mean_token_sum_norm")
    exact = np.exp(lp[:, 0].astype(np.float64) - old[:, 0])
    clipped = np.array([True, False, False, True])
    assert_close(grad[:, 0], np.where(clipped, 0.0, -advantages * exact) / 4)
    assert_close(loss, -np.sum(np.where(clipped, [0.9, 0, 0, 1.3], exact) * advantages) / 4)
    assert_close(aux["clip_fraction"], 0.5)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_grpo_loss_with_reference_kl_matches_numpy(aggregation):
    lp, old, advantages, mask, ref_lp = _batch((4, 7), seed=4)
    loss, aux, grad = _loss_and_grad(lp, old, advantages, mask, aggregation=aggregation, ref_logprobs=ref_lp,
                                     kl_coef=0.05)
    expected_loss, expected_grad, _ = ref.grpo_loss(lp, old, advantages, mask, 0.2, 0.2, aggregation,
                                                    ref_logprobs=ref_lp, kl_coef=0.05)
    assert_close(loss, expected_loss)
    assert_close(grad, expected_grad)
    delta = ref_lp.astype(np.float64) - lp
    assert_close(aux["ref_kl"], ((np.exp(delta) - delta - 1) * mask).sum() / mask.sum())


def test_numpy_reference_gradient_matches_finite_differences():
    lp, old, advantages, mask, ref_lp = _batch((3, 5), seed=5)
    lp = lp.astype(np.float64)

    def loss(x):
        return ref.grpo_loss(x, old, advantages, mask, 0.2, 0.2, "seq_mean_token_mean", ref_lp, 0.1)[0]

    expected = ref.grpo_loss(lp, old, advantages, mask, 0.2, 0.2, "seq_mean_token_mean", ref_lp, 0.1)[1]
    np.testing.assert_allclose(expected, ref.finite_difference(loss, lp), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- semantics

@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_on_policy_gradient_is_reinforce(aggregation):
    """old_logprobs == logprobs: grad w.r.t. the logits equals that of the REINFORCE surrogate -A * lp."""
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(4, 6, 9)).astype(np.float32)
    tokens = rng.integers(0, 9, size=(4, 6)).astype(np.int32)
    advantages = rng.normal(size=4).astype(np.float32)
    mask = response_mask(rng, 4, 6)
    weights = ref.aggregation_weights(mask, aggregation)

    def grpo(x):
        lp = token_logprobs(x, tokens)
        return grpo_loss(lp, jax.lax.stop_gradient(lp), advantages, mask, aggregation=aggregation)[0]

    reinforce_upstream = -advantages[:, None] * weights  # d(sum_w -A lp) / d lp
    assert_close(jax.grad(grpo)(logits), ref.token_logprobs_grad(logits, tokens, reinforce_upstream))


def test_token_mean_weights_tokens_and_seq_mean_weights_sequences():
    """A long response (8 tokens, A=+1) and a short one (2 tokens, A=-1), on-policy."""
    lp = np.full((2, 8), -1.0, np.float32)
    mask = np.zeros((2, 8), np.float32)
    mask[0, :] = 1.0
    mask[1, :2] = 1.0
    advantages = np.array([1.0, -1.0], np.float32)
    token_loss, _, token_grad = _loss_and_grad(lp, lp, advantages, mask, aggregation="token_mean")
    seq_loss, _, seq_grad = _loss_and_grad(lp, lp, advantages, mask, aggregation="seq_mean_token_mean")
    drgrpo_loss, _, drgrpo_grad = _loss_and_grad(lp, lp, advantages, mask, aggregation="seq_mean_token_sum_norm")
    assert_close(token_loss, -(8 - 2) / 10)   # the long response dominates
    assert_close(seq_loss, -(1 - 1) / 2)      # each response counts once
    assert_close(drgrpo_loss, -(8 - 2) / 16)
    assert_close(token_grad, -advantages[:, None] * mask / 10)
    assert_close(seq_grad, -advantages[:, None] * mask / (2 * mask.sum(axis=1, keepdims=True)))
    assert_close(drgrpo_grad, -advantages[:, None] * mask / 16)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("per_token_advantages", [False, True])
def test_padding_beyond_the_mask_changes_nothing(aggregation, per_token_advantages):
    lp, old, advantages, mask, ref_lp = _batch((4, 9), seed=9, per_token_advantages=per_token_advantages)
    rng = np.random.default_rng(1)
    kwargs = dict(aggregation=aggregation, kl_coef=0.1)
    clean = _loss_and_grad(lp, old, advantages, mask, ref_logprobs=ref_lp, **kwargs)
    if per_token_advantages:
        advantages = garbage_outside(advantages, mask, rng)
    dirty = _loss_and_grad(garbage_outside(lp, mask, rng), garbage_outside(old, mask, rng), advantages, mask,
                           ref_logprobs=garbage_outside(ref_lp, mask, rng), **kwargs)
    assert_close(dirty[0], clean[0], rtol=0, atol=0)
    assert_close(dirty[2], clean[2], rtol=0, atol=0)
    for name in clean[1]:
        assert_close(dirty[1][name], clean[1][name], rtol=0, atol=0, err_msg=name)
    assert np.all(np.asarray(dirty[2])[mask == 0] == 0.0)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean"])
def test_extra_empty_rows_change_nothing(aggregation):
    lp, old, advantages, mask, _ = _batch((3, 5), seed=3)
    loss, _, grad = _loss_and_grad(lp, old, advantages, mask, aggregation=aggregation)
    more = _batch((2, 5), seed=4)
    padded = [np.concatenate([a, b]) for a, b in zip((lp, old, advantages), more[:3])]
    padded_mask = np.concatenate([mask, np.zeros((2, 5), np.float32)])
    padded_loss, _, padded_grad = _loss_and_grad(*padded, padded_mask, aggregation=aggregation)
    assert_close(padded_loss, loss, rtol=1e-6, atol=0)
    assert_close(padded_grad[:3], grad, rtol=1e-6, atol=0)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_empty_mask_is_finite_and_zero(aggregation):
    lp, old, advantages, mask, ref_lp = _batch((3, 4), seed=0)
    loss, aux, grad = _loss_and_grad(lp, old, advantages, np.zeros_like(mask), aggregation=aggregation,
                                     ref_logprobs=ref_lp, kl_coef=0.1)
    assert float(loss) == 0.0
    assert np.all(np.asarray(grad) == 0.0)
    assert all(np.isfinite(float(value)) for value in aux.values())


def test_zero_kl_coef_with_reference_equals_no_reference():
    lp, old, advantages, mask, ref_lp = _batch((3, 4), seed=1)
    with_ref = _loss_and_grad(lp, old, advantages, mask, ref_logprobs=ref_lp)
    without = _loss_and_grad(lp, old, advantages, mask)
    assert_close(with_ref[0], without[0], rtol=0, atol=0)
    assert_close(with_ref[2], without[2], rtol=0, atol=0)
    assert "ref_kl" in with_ref[1] and "ref_kl" not in without[1]


def test_old_and_reference_logprobs_get_no_gradient():
    lp, old, advantages, mask, ref_lp = _batch((3, 4), seed=2)
    grads = jax.grad(lambda o, r: grpo_loss(lp, o, advantages, mask, ref_logprobs=r, kl_coef=0.1)[0],
                     argnums=(0, 1))(old, ref_lp)
    assert all(np.all(np.asarray(g) == 0.0) for g in grads)


# ---------------------------------------------------------------- errors

def _good():
    return dict(logprobs=np.zeros((2, 3), np.float32), old_logprobs=np.zeros((2, 3), np.float32),
                advantages=np.zeros(2, np.float32), mask=np.ones((2, 3), np.float32))


@pytest.mark.parametrize("changes, error, match", [
    ({"aggregation": "sum"}, ValueError, "aggregation: expected one of"),
    ({"old_logprobs": np.zeros((2, 4), np.float32)}, ValueError, "old_logprobs: expected shape"),
    ({"advantages": np.zeros(3, np.float32)}, ValueError, "advantages: expected shape"),
    ({"logprobs": np.zeros(3, np.float32), "mask": np.ones(3)}, ValueError, r"mask: expected a 2-D array \[B, T\]"),
    ({"logprobs": np.zeros((2, 3), np.int32)}, TypeError, "logprobs: expected a floating"),
    ({"clip_eps_low": -0.1}, ValueError, "clip_eps_low"),
    ({"kl_coef": 0.1}, ValueError, r"kl_coef: a non-zero \(or traced\) KL coefficient"),
    ({"ref_logprobs": np.zeros((3, 3), np.float32)}, ValueError, "ref_logprobs: expected shape"),
])
def test_grpo_loss_bad_arguments(changes, error, match):
    arguments = {**_good(), **changes}
    with pytest.raises(error, match=match):
        grpo_loss(**arguments)
