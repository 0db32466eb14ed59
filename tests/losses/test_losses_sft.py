"""sft_loss: value and gradient against float64 numpy, masking, empty masks, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses_numpy_reference as ref
from losses_testing import assert_close, response_mask
from nemocascade.losses import sft_loss


def _inputs(batch, length, vocab, seed):
    rng = np.random.default_rng(seed)
    logits = (2.0 * rng.normal(size=(batch, length, vocab))).astype(np.float32)
    targets = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
    return logits, targets, response_mask(rng, batch, length)


def _loss_and_grad(logits, targets, mask, **kwargs):
    (loss, aux), grad = jax.value_and_grad(lambda x: sft_loss(x, targets, mask, **kwargs), has_aux=True)(logits)
    return loss, aux, grad


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 6, 11), (4, 9, 17)])
@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_matches_numpy(shape, z_loss, chunk_size):
    logits, targets, mask = _inputs(*shape, seed=sum(shape))
    loss, aux, grad = _loss_and_grad(logits, targets, mask, z_loss=z_loss, chunk_size=chunk_size)
    expected_loss, expected_grad = ref.sft_loss(logits, targets, mask, z_loss)
    assert loss.dtype == jnp.float32
    assert_close(loss, expected_loss)
    assert_close(grad, expected_grad)
    assert_close(aux["num_tokens"], mask.sum())
    expected_ce, _ = ref.sft_loss(logits, targets, mask, 0.0)
    assert_close(aux["cross_entropy"], expected_ce)


def test_numpy_reference_gradient_matches_finite_differences():
    logits, targets, mask = _inputs(2, 4, 5, seed=0)
    numeric = ref.finite_difference(lambda x: ref.sft_loss(x, targets, mask, 0.1)[0], logits)
    np.testing.assert_allclose(ref.sft_loss(logits, targets, mask, 0.1)[1], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_padding_beyond_the_mask_changes_nothing(chunk_size):
    logits, targets, mask = _inputs(3, 7, 9, seed=1)
    rng = np.random.default_rng(2)
    padded_logits = np.where(mask[..., None] > 0, logits, 50.0 * rng.normal(size=logits.shape)).astype(np.float32)
    padded_targets = np.where(mask > 0, targets, -100).astype(np.int32)  # out-of-range padding ids
    loss, _, grad = _loss_and_grad(logits, targets, mask, z_loss=1e-3, chunk_size=chunk_size)
    padded_loss, _, padded_grad = _loss_and_grad(padded_logits, padded_targets, mask, z_loss=1e-3,
                                                 chunk_size=chunk_size)
    assert_close(padded_loss, loss, rtol=1e-6, atol=0)
    assert_close(padded_grad, grad, rtol=1e-6, atol=0)
    assert np.all(np.asarray(padded_grad)[mask == 0] == 0.0)


def test_empty_mask_is_finite_and_zero():
    logits, targets, mask = _inputs(2, 5, 7, seed=3)
    loss, aux, grad = _loss_and_grad(logits, targets, np.zeros_like(mask), z_loss=0.1)
    assert float(loss) == 0.0 and float(aux["num_tokens"]) == 0.0
    assert np.all(np.asarray(grad) == 0.0)


def test_bool_mask_equals_float_mask():
    logits, targets, mask = _inputs(2, 5, 7, seed=4)
    assert_close(sft_loss(logits, targets, mask > 0)[0], sft_loss(logits, targets, mask)[0], rtol=0, atol=0)


@pytest.mark.parametrize("mask_shape, kwargs, error, match", [
    ((2, 4), {}, ValueError, "mask: expected shape"),
    ((2, 5), {"z_loss": -1.0}, ValueError, "z_loss"),
    ((2, 5), {"z_loss": "big"}, TypeError, "z_loss"),
])
def test_bad_arguments_raise_clear_errors(mask_shape, kwargs, error, match):
    logits, targets, _ = _inputs(2, 5, 7, seed=5)
    with pytest.raises(error, match=match):
        sft_loss(logits, targets, np.ones(mask_shape, np.float32), **kwargs)
