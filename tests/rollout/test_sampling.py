"""Sampling statistics against the exact filtered distribution (chi-square, fixed seed)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nemocascade.rollout import filter_logits, sample_tokens

LOGITS = np.log(np.asarray([0.30, 0.25, 0.15, 0.12, 0.08, 0.05, 0.03, 0.02]))


def _expected_probs(temperature, top_k, top_p):
    """Independent float64 reference: top-k first, then the nucleus of the renormalised remainder
    (the sequential convention of common samplers)."""
    scaled = LOGITS / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    if top_k:
        probs = np.where(np.isin(np.arange(probs.size), order[:top_k]), probs, 0.0)
        probs /= probs.sum()
    if top_p < 1.0:
        keep = np.zeros_like(probs, bool)
        mass = 0.0
        for idx in order:
            keep[idx] = True
            mass += probs[idx]
            if mass >= top_p:
                break
        probs = np.where(keep, probs, 0.0)
    return probs / probs.sum()


# chi-square critical values at p = 0.001 for df = 1..7
_CHI2_CRIT = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.6), (1.3, 5, 0.8)])
def test_empirical_frequencies_match_filtered_distribution(temperature, top_k, top_p):
    n = 20000
    logits = jnp.tile(jnp.asarray(LOGITS, jnp.float32), (n, 1))
    tokens, logprobs = jax.jit(lambda r, l: sample_tokens(r, l, temperature=temperature, top_k=top_k,
                                                          top_p=top_p))(jax.random.PRNGKey(7), logits)
    expected = _expected_probs(temperature, top_k, top_p)
    counts = np.bincount(np.asarray(tokens), minlength=8)
    assert counts[expected == 0].sum() == 0, "a filtered-out token was sampled"
    support = expected > 0
    chi2 = float(np.sum((counts[support] - n * expected[support]) ** 2 / (n * expected[support])))
    assert chi2 < _CHI2_CRIT[int(support.sum()) - 1], (chi2, counts, expected)
    # recorded log-probs are the untruncated tempered ones
    full = LOGITS / temperature - np.log(np.sum(np.exp(LOGITS / temperature)))
    np.testing.assert_allclose(np.asarray(logprobs), full[np.asarray(tokens)], rtol=1e-5, atol=1e-6)


def test_greedy_is_argmax_with_untempered_logprob():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 10)), jnp.float32)
    tokens, logprobs = sample_tokens(jax.random.PRNGKey(0), logits, temperature=0.0)
    np.testing.assert_array_equal(np.asarray(tokens), np.argmax(np.asarray(logits), -1))
    np.testing.assert_allclose(np.asarray(logprobs),
                               np.max(np.asarray(jax.nn.log_softmax(logits)), -1), rtol=1e-6)


def test_filter_keeps_at_least_one_token():
    logits = jnp.asarray([[5.0, 0.0, 0.0]])
    out = filter_logits(logits, top_p=0.01)
    assert np.isfinite(np.asarray(out)).sum() == 1
