"""token_logprobs: values and gradients against float64 numpy, chunked == plain, bf16, memory, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_numpy_reference as ref
from losses_testing import assert_close
from nemocascade.losses import token_logprobs, token_logprobs_and_logsumexp

SHAPES = [(1, 1, 2), (2, 5, 7), (3, 9, 33)]
CHUNKS = [None, 1, 4, 64]  # plain, one position, a non-divisor of T (last chunk overlaps), larger than T


def _inputs(shape, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=shape)).astype(np.float32)
    targets = rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int32)
    upstream = rng.normal(size=shape[:-1]).astype(np.float32)
    return logits, targets, upstream


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_values_and_gradients_match_numpy(shape, chunk_size):
    logits, targets, upstream = _inputs(shape)
    lp, lse = token_logprobs_and_logsumexp(logits, targets, chunk_size=chunk_size)
    assert lp.dtype == jnp.float32 and lp.shape == shape[:-1]
    assert_close(lp, ref.token_logprobs(logits, targets))
    assert_close(lse, ref.logsumexp(logits))

    grad = jax.grad(lambda x: jnp.sum(upstream * token_logprobs(x, targets, chunk_size=chunk_size)))(logits)
    assert_close(grad, ref.token_logprobs_grad(logits, targets, upstream))


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_logsumexp_gradient_matches_numpy(chunk_size):
    logits, targets, upstream = _inputs((2, 5, 7), seed=1)

    def objective(x):
        lp, lse = token_logprobs_and_logsumexp(x, targets, chunk_size=chunk_size)
        return jnp.sum(upstream * lp) + jnp.sum(lse ** 2)

    lse = ref.logsumexp(logits)
    expected = ref.token_logprobs_grad(logits, targets, upstream)
    expected += (2.0 * lse)[..., None] * np.exp(ref.log_softmax(logits))
    assert_close(jax.grad(objective)(logits), expected)


def test_numpy_reference_gradient_matches_finite_differences():
    logits, targets, upstream = _inputs((2, 3, 4), seed=2)
    numeric = ref.finite_difference(lambda x: np.sum(upstream * ref.token_logprobs(x, targets)), logits)
    np.testing.assert_allclose(ref.token_logprobs_grad(logits, targets, upstream), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("chunk_size", [2, 5, 7])
def test_chunked_equals_plain(chunk_size):
    logits, targets, upstream = _inputs((3, 7, 13), seed=3)

    def objective(x, chunk):
        return jnp.sum(upstream * token_logprobs(x, targets, chunk_size=chunk))

    np.testing.assert_allclose(token_logprobs(logits, targets, chunk_size=chunk_size),
                               token_logprobs(logits, targets), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.grad(objective)(logits, chunk_size), jax.grad(objective)(logits, None),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_bf16_logits_of_large_magnitude(chunk_size):
    logits, targets, upstream = _inputs((2, 6, 50), seed=4, scale=8.0)
    logits_bf16 = jnp.asarray(logits + 3000.0, jnp.bfloat16)  # a naive bf16 softmax would be garbage
    exact = np.asarray(logits_bf16.astype(jnp.float32), np.float64)
    lp = token_logprobs(logits_bf16, targets, chunk_size=chunk_size)
    assert lp.dtype == jnp.float32
    assert_close(lp, ref.token_logprobs(exact, targets))

    grad = jax.grad(lambda x: jnp.sum(upstream * token_logprobs(x, targets, chunk_size=chunk_size)))(logits_bf16)
    assert grad.dtype == jnp.bfloat16
    # The gradient is rounded to bf16 (8 mantissa bits) on output.
    assert_close(grad, ref.token_logprobs_grad(exact, targets, upstream), rtol=1e-2, atol=1e-2)


def test_out_of_range_targets_give_nan_only_there():
    logits, targets, _ = _inputs((2, 5, 7), seed=5)
    padded = targets.copy()
    padded[0, 3:] = -100
    padded[1, 4] = 7
    for chunk_size in (None, 2):
        lp = np.asarray(token_logprobs(logits, padded, chunk_size=chunk_size))
        bad = padded != targets
        assert np.all(np.isnan(lp[bad]))
        assert_close(lp[~bad], ref.token_logprobs(logits, targets)[~bad])


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_chunked_path_never_holds_a_full_float32_copy():
    """XLA's own buffer accounting of the compiled programs (temporaries, excluding inputs and outputs).

    Float32 logits: on the CPU backend XLA upcasts a bf16 operand of a loop as a whole before the loop
    (CPU has no bf16 arithmetic), which would hide what the chunking does; accelerators slice bf16 as is.
    """
    batch, length, vocab, chunk = 2, 256, 512, 16
    logits = jnp.zeros((batch, length, vocab), jnp.float32)
    targets = jnp.zeros((batch, length), jnp.int32)
    full_f32_bytes = batch * length * vocab * 4

    def forward(chunk_size):
        return lambda x: jnp.sum(token_logprobs(x, targets, chunk_size=chunk_size))

    def gradient(chunk_size):
        return jax.grad(forward(chunk_size))

    # The plain path does materialise it (so this measurement can tell the two apart) ...
    assert _temp_bytes(forward(None), logits) >= full_f32_bytes
    # ... the chunked forward and backward hold a few [B, chunk, V] slices, not [B, T, V].
    assert _temp_bytes(forward(chunk), logits) < full_f32_bytes / 4
    assert _temp_bytes(gradient(chunk), logits) < full_f32_bytes / 4


def test_leading_axes_and_vmap():
    logits, targets, _ = _inputs((3, 5, 7), seed=6)
    expected = ref.token_logprobs(logits, targets)
    assert_close(token_logprobs(logits[0], targets[0], chunk_size=2), expected[0])  # [T, V]
    stacked = jax.vmap(lambda x, y: token_logprobs(x, y, chunk_size=2))(logits, targets)
    assert_close(stacked, expected)


@pytest.mark.parametrize("logits, targets, kwargs, error, match", [
    (np.zeros((2, 3, 4), np.float32), np.zeros((2, 4), np.int32), {}, ValueError, "targets: expected shape"),
    (np.zeros((2, 3, 4), np.float32), np.zeros((2, 3), np.float32), {}, TypeError, "targets: expected an integer"),
    (np.zeros((2, 3, 4), np.int32), np.zeros((2, 3), np.int32), {}, TypeError, "logits: expected a floating"),
    (np.zeros((4,), np.float32), np.zeros((), np.int32), {}, ValueError, "logits: expected shape"),
    (np.zeros((2, 3, 4), np.float32), np.zeros((2, 3), np.int32), {"chunk_size": 0}, ValueError, "chunk_size"),
    (np.zeros((2, 3, 4), np.float32), np.zeros((2, 3), np.int32), {"chunk_size": 2.0}, TypeError, "chunk_size"),
])
def test_bad_arguments_raise_clear_errors(logits, targets, kwargs, error, match):
    with pytest.raises(error, match=match):
        token_logprobs(logits, targets, **kwargs)
    with pytest.raises(error, match=match):  # also under jit: raised while tracing, named the same way
        jax.jit(lambda x, y: token_logprobs(x, y, **kwargs))(logits, targets)
