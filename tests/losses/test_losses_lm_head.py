"""head_logprobs_and_logsumexp: the chunked LM head + log-softmax against float64 numpy, the plain path,
bf16, padding targets, XLA's buffer accounting and argument errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_numpy_reference as ref
from losses_testing import assert_close
from nemocascade.losses import head_logprobs_and_logsumexp, token_logprobs_and_logsumexp

CHUNKS = [1, 4, 64]  # one position, a non-divisor of T (the last chunk is padded), larger than T


def _inputs(lead, length, width=6, vocab=11, seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(*lead, length, width)).astype(np.float32)
    head = (1.5 * rng.normal(size=(width, vocab))).astype(np.float32)
    targets = rng.integers(0, vocab, size=(*lead, length)).astype(np.int32)
    d_lp, d_lse = (rng.normal(size=(*lead, length)).astype(np.float32) for _ in range(2))
    return hidden, head, targets, d_lp, d_lse


def _numpy_reference(hidden, head, targets, d_lp, d_lse, temperature):
    """float64 (lp, lse, d hidden, d head) of sum(d_lp * lp + d_lse * lse) with logits = hidden @ head / T."""
    hidden, head = np.asarray(hidden, np.float64), np.asarray(head, np.float64)
    logits = hidden @ head / temperature
    d_logits = ref.token_logprobs_grad(logits, targets, d_lp)
    d_logits += np.asarray(d_lse, np.float64)[..., None] * np.exp(ref.log_softmax(logits))
    d_hidden = d_logits @ head.T / temperature
    d_head = hidden.reshape(-1, hidden.shape[-1]).T @ d_logits.reshape(-1, d_logits.shape[-1]) / temperature
    return ref.token_logprobs(logits, targets), ref.logsumexp(logits), d_hidden, d_head


def _objective(targets, d_lp, d_lse, chunk_size, temperature):
    def objective(hidden, head):
        lp, lse = head_logprobs_and_logsumexp(hidden, head, targets, chunk_size=chunk_size, temperature=temperature)
        return jnp.sum(d_lp * lp) + jnp.sum(d_lse * lse)
    return objective


@pytest.mark.parametrize("lead, length", [((2,), 9), ((), 7), ((2, 3), 5)])
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_values_and_gradients_match_numpy(lead, length, chunk_size):
    hidden, head, targets, d_lp, d_lse = _inputs(lead, length)
    temperature = 0.7
    want_lp, want_lse, want_d_hidden, want_d_head = _numpy_reference(hidden, head, targets, d_lp, d_lse, temperature)
    lp, lse = head_logprobs_and_logsumexp(hidden, head, targets, chunk_size=chunk_size, temperature=temperature)
    assert lp.dtype == lse.dtype == jnp.float32 and lp.shape == lse.shape == targets.shape
    assert_close(lp, want_lp)
    assert_close(lse, want_lse)
    d_hidden, d_head = jax.jit(jax.grad(_objective(targets, d_lp, d_lse, chunk_size, temperature),
                                        argnums=(0, 1)))(hidden, head)
    assert d_hidden.shape == hidden.shape and d_head.shape == head.shape
    assert_close(d_hidden, want_d_hidden)
    assert_close(d_head, want_d_head)


def test_equals_the_plain_path_on_materialised_logits():
    hidden, head, targets, d_lp, d_lse = _inputs((3,), 13, width=8, vocab=17, seed=1)

    def plain(h, w):
        lp, lse = token_logprobs_and_logsumexp(h @ w / 1.3, targets)
        return jnp.sum(d_lp * lp) + jnp.sum(d_lse * lse)

    chunked = _objective(targets, d_lp, d_lse, 5, 1.3)
    value, grads = jax.value_and_grad(chunked, argnums=(0, 1))(hidden, head)
    want_value, want_grads = jax.value_and_grad(plain, argnums=(0, 1))(hidden, head)
    assert_close(value, want_value)
    for got, want in zip(grads, want_grads):
        assert_close(got, want)


def test_bfloat16_inputs_accumulate_in_float32():
    hidden, head, targets, d_lp, d_lse = _inputs((2,), 9, width=32, vocab=64, seed=2)
    lp, lse = head_logprobs_and_logsumexp(jnp.asarray(hidden, jnp.bfloat16), jnp.asarray(head, jnp.bfloat16),
                                          targets, chunk_size=4)
    assert lp.dtype == jnp.float32
    # The reference sees the same bf16-rounded inputs in float64: only the f32 accumulation differs.
    rounded = [np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64) for x in (hidden, head)]
    want_lp, want_lse, _, _ = _numpy_reference(*rounded, targets, d_lp, d_lse, 1.0)
    assert_close(lp, want_lp, rtol=1e-5, atol=1e-4)
    assert_close(lse, want_lse, rtol=1e-5, atol=1e-4)
    grads = jax.grad(_objective(targets, d_lp, d_lse, 4, 1.0), argnums=(0, 1))(
        jnp.asarray(hidden, jnp.bfloat16), jnp.asarray(head, jnp.bfloat16))
    assert grads[0].dtype == grads[1].dtype == jnp.bfloat16


def test_padding_targets_give_nan_there_and_no_gradient_when_masked():
    hidden, head, targets, _, _ = _inputs((2,), 7, seed=3)
    targets[0, 2] = -100
    targets[1, 6] = 11  # == V: out of range too
    lp, lse = head_logprobs_and_logsumexp(hidden, head, targets, chunk_size=3)
    invalid = np.zeros(targets.shape, bool)
    invalid[0, 2] = invalid[1, 6] = True
    assert np.all(np.isnan(np.asarray(lp)[invalid])) and np.all(np.isfinite(np.asarray(lp)[~invalid]))
    assert np.all(np.isfinite(np.asarray(lse)))

    def masked(h, w, tgt):
        lp, _ = head_logprobs_and_logsumexp(h, w, tgt, chunk_size=3)
        return jnp.sum(jnp.where(invalid, 0.0, lp))

    grads = jax.grad(masked, argnums=(0, 1))(hidden, head, targets)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    # Changing an ignored target changes nothing.
    other = targets.copy()
    other[0, 2] = 3
    for got, want in zip(grads, jax.grad(lambda h, w: masked(h, w, other), argnums=(0, 1))(hidden, head)):
        assert_close(got, want)


def test_empty_sequence():
    hidden, head, targets, _, _ = _inputs((2,), 0)
    lp, lse = head_logprobs_and_logsumexp(hidden, head, targets, chunk_size=4)
    assert lp.shape == lse.shape == (2, 0)


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_never_holds_the_float32_logits():
    """XLA's own buffer accounting of the compiled programs (temporaries, excluding inputs and outputs)."""
    batch, length, width, vocab, chunk = 2, 1024, 16, 512, 16
    hidden = jnp.zeros((batch, length, width), jnp.float32)
    head = jnp.zeros((width, vocab), jnp.float32)
    targets = jnp.zeros((batch, length), jnp.int32)
    full_f32_bytes = batch * length * vocab * 4

    def plain(h, w):
        return jnp.sum(token_logprobs_and_logsumexp(h @ w, targets)[0])

    def chunked(h, w):
        return jnp.sum(head_logprobs_and_logsumexp(h, w, targets, chunk_size=chunk)[0])

    # The plain path materialises the logits (so this measurement tells the two apart) ...
    assert _temp_bytes(plain, hidden, head) >= full_f32_bytes
    # ... the chunked forward and backward hold [B, chunk, V] slices and the [D, V] head gradient.
    assert _temp_bytes(chunked, hidden, head) < full_f32_bytes / 4
    assert _temp_bytes(jax.grad(chunked, argnums=(0, 1)), hidden, head) < full_f32_bytes / 4


@pytest.mark.parametrize("hidden_shape, head_shape, target_dtype, kwargs, error, match", [
    ((2, 3, 4), (4, 5), np.int32, {"chunk_size": 0}, ValueError, "chunk_size"),
    ((2, 3, 4), (4, 5), np.int32, {"chunk_size": 2, "temperature": 0.0}, ValueError, "temperature"),
    ((2, 3, 4), (5, 4), np.int32, {"chunk_size": 2}, ValueError, "head: expected shape"),
    ((2, 4, 4), (4, 5), np.int32, {"chunk_size": 2}, ValueError, "hidden: expected shape"),
    ((2, 3, 4), (4, 5), np.float32, {"chunk_size": 2}, TypeError, "targets: expected an integer"),
])
def test_bad_arguments_raise_clear_errors(hidden_shape, head_shape, target_dtype, kwargs, error, match):
    hidden, head = np.zeros(hidden_shape, np.float32), np.zeros(head_shape, np.float32)
    targets = np.zeros((2, 3), target_dtype)
    with pytest.raises(error, match=match):
        head_logprobs_and_logsumexp(hidden, head, targets, **kwargs)
    with pytest.raises(error, match=match):  # also under jit: raised while tracing
        jax.jit(lambda h, w, t: head_logprobs_and_logsumexp(h, w, t, **kwargs))(hidden, head, targets)
