"""Random inputs and comparison helpers for the losses tests."""
from __future__ import annotations

import numpy as np

# float32 JAX against float64 numpy: relative 1e-5, plus an absolute floor for values that are ~0.
RTOL = 1e-5
ATOL = 1e-6


def assert_close(actual, expected, *, rtol=RTOL, atol=ATOL, err_msg=""):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol, err_msg=err_msg)


def response_mask(rng: np.random.Generator, batch: int, length: int, *, empty_rows: bool = True) -> np.ndarray:
    """f32[B, T] masks shaped like real batches: a prompt prefix (0), a response (1), then padding (0).

    With ``empty_rows`` the first row has no response token (when B > 1); at least one row is non-empty.
    """
    mask = np.zeros((batch, length), np.float32)
    for b in range(batch):
        prompt = rng.integers(0, length)
        response = rng.integers(1, length - prompt + 1)
        mask[b, prompt:prompt + response] = 1.0
    if empty_rows and batch > 1:
        mask[0] = 0.0
    return mask


def logprobs(rng: np.random.Generator, shape) -> np.ndarray:
    """f32 log-probabilities in (-4, 0)."""
    return (-rng.uniform(0.01, 4.0, size=shape)).astype(np.float32)


def garbage_outside(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``values`` with every masked-out entry replaced by junk: large numbers, inf and NaN."""
    junk = rng.choice(np.array([1e4, -1e4, np.inf, -np.inf, np.nan], np.float32), size=values.shape)
    return np.where(mask > 0, values, junk).astype(values.dtype)


# Shapes [B, T] used by the per-token loss tests: a single token, tiny, and a longer ragged batch.
TOKEN_SHAPES = [(1, 1), (2, 3), (5, 11)]
