"""bradley_terry_loss and dpo_loss: float64 numpy parity (values, gradients, aux), errors."""
import jax
import numpy as np
import pytest

import losses_numpy_reference as ref
from losses_testing import assert_close
from nemocascade.losses import bradley_terry_loss, dpo_loss


def _pairs(batch, seed, scale=2.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.normal(size=batch)).astype(np.float32) for _ in range(4)]


@pytest.mark.parametrize("batch", [1, 4, 33])
@pytest.mark.parametrize("margin", ["zero", "scalar", "per_pair"])
def test_bradley_terry_matches_numpy(batch, margin):
    chosen, rejected, margins, _ = _pairs(batch, seed=batch)
    margin_value = {"zero": 0.0, "scalar": 0.5, "per_pair": np.abs(margins)}[margin]
    (loss, aux), grads = jax.value_and_grad(
        lambda c, r: bradley_terry_loss(c, r, margin=margin_value), argnums=(0, 1), has_aux=True)(chosen, rejected)
    expected_loss, d_chosen, d_rejected = ref.bradley_terry_loss(chosen, rejected, margin_value)
    assert_close(loss, expected_loss)
    assert_close(grads[0], d_chosen)
    assert_close(grads[1], d_rejected)
    assert_close(aux["accuracy"], np.mean(chosen > rejected))
    assert_close(aux["margin_mean"], np.mean(chosen.astype(np.float64) - rejected))


def test_bradley_terry_is_stable_for_large_gaps():
    chosen = np.array([-200.0, 200.0], np.float32)
    rejected = np.zeros(2, np.float32)
    loss, _ = bradley_terry_loss(chosen, rejected)
    assert_close(loss, ref.bradley_terry_loss(chosen, rejected, 0.0)[0])
    assert np.isfinite(float(loss))


def test_numpy_reference_gradients_match_finite_differences():
    chosen, rejected, pc_ref, pr_ref = _pairs(5, seed=0)
    numeric = ref.finite_difference(lambda c: ref.bradley_terry_loss(c, rejected, 0.3)[0], chosen)
    np.testing.assert_allclose(ref.bradley_terry_loss(chosen, rejected, 0.3)[1], numeric, rtol=1e-6, atol=1e-9)
    numeric = ref.finite_difference(lambda pr: ref.dpo_loss(chosen, pr, pc_ref, pr_ref, 0.2)[0], rejected)
    np.testing.assert_allclose(ref.dpo_loss(chosen, rejected, pc_ref, pr_ref, 0.2)[2], numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("batch", [1, 6, 17])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_matches_numpy(batch, beta):
    pc, pr, rc, rr = _pairs(batch, seed=10 + batch, scale=20.0)  # sequence log-probs are large
    pc, pr, rc, rr = (-np.abs(x) for x in (pc, pr, rc, rr))
    (loss, aux), grads = jax.value_and_grad(lambda c, r: dpo_loss(c, r, rc, rr, beta=beta), argnums=(0, 1),
                                            has_aux=True)(pc, pr)
    expected_loss, d_chosen, d_rejected = ref.dpo_loss(pc, pr, rc, rr, beta)
    assert_close(loss, expected_loss)
    assert_close(grads[0], d_chosen)
    assert_close(grads[1], d_rejected)
    chosen_rewards = beta * (pc.astype(np.float64) - rc)
    rejected_rewards = beta * (pr.astype(np.float64) - rr)
    assert_close(aux["chosen_reward_mean"], chosen_rewards.mean())
    assert_close(aux["rejected_reward_mean"], rejected_rewards.mean())
    assert_close(aux["accuracy"], np.mean(chosen_rewards > rejected_rewards))
    assert_close(aux["margin_mean"], np.mean(chosen_rewards - rejected_rewards))


def test_dpo_reference_gets_no_gradient():
    pc, pr, rc, rr = _pairs(4, seed=1)
    grads = jax.grad(lambda c, r: dpo_loss(pc, pr, c, r)[0], argnums=(0, 1))(rc, rr)
    assert all(np.all(np.asarray(g) == 0.0) for g in grads)


def test_dpo_at_the_reference_is_log_two():
    pc, pr, _, _ = _pairs(3, seed=2)
    loss, aux = dpo_loss(pc, pr, pc, pr, beta=0.5)
    assert_close(loss, np.log(2.0))
    assert float(aux["accuracy"]) == 0.0


@pytest.mark.parametrize("arrays, kwargs, error, match", [
    ((np.zeros(3, np.float32), np.zeros(4, np.float32)), {}, ValueError, "rejected_rewards: expected shape"),
    ((np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)), {}, ValueError, r"chosen_rewards: expected a 1-D"),
    ((np.zeros(0, np.float32), np.zeros(0, np.float32)), {}, ValueError, "at least one pair"),
    ((np.zeros(3, np.int32), np.zeros(3, np.float32)), {}, TypeError, "chosen_rewards: expected a floating"),
    ((np.zeros(3, np.float32), np.zeros(3, np.float32)), {"margin": np.zeros(2)}, ValueError, "margin"),
])
def test_bradley_terry_bad_arguments(arrays, kwargs, error, match):
    with pytest.raises(error, match=match):
        bradley_terry_loss(*arrays, **kwargs)


@pytest.mark.parametrize("arrays, kwargs, error, match", [
    ([np.zeros(3, np.float32)] * 3 + [np.zeros(2, np.float32)], {}, ValueError, "ref_rejected_logprobs"),
    ([np.zeros(3, np.float32)] * 4, {"beta": 0.0}, ValueError, "beta"),
    ([np.zeros(3, np.float32)] * 4, {"beta": None}, TypeError, "beta"),
])
def test_dpo_bad_arguments(arrays, kwargs, error, match):
    with pytest.raises(error, match=match):
        dpo_loss(*arrays, **kwargs)
