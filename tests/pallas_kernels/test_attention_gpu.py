"""The Pallas GPU (Triton) attention kernels in the Pallas interpreter (impl="interpret") vs the reference
(compiled instead with NEMOCASCADE_KERNEL_TESTS=gpu on a GPU host: see kernel_impl.py).

Forward values and q/k/v gradients (flash) and decode outputs are compared with the float32
`reference.py` (itself checked against float64 numpy in test_attention_reference.py):
||out - ref|| / ||ref|| < 1e-5 for float32 inputs, < 1e-2 (values) for bfloat16. Shapes are chosen
so that sequences end in partial blocks (the padded, masked tail), segments start and end inside
blocks, and GQA ratios 1, 2, 4 and 8 all run. Under a q_offset the key blocks past the diagonal must
be skipped: NaN there must not reach any output (test_attention_lse.py checks q_offset's values).
"""
import numpy as np
import pytest
import jax.numpy as jnp

from kernel_impl import GPU_KERNEL_IMPL as IMPL, gpu_kernel
from test_attention_common import (check_decode_against_reference, check_flash_against_reference,
                                   check_offset_skips_hidden_keys, lower_for_platform, packed_segments,
                                   random_inputs)

D = 32


# (B, T, S, H, KVH, segmented, causal, block_q, block_k)
FLASH_CASES = {
    "gqa2_segments_ragged_tail": (2, 45, 45, 4, 2, True, True, 16, 16),
    "gqa4_unequal_blocks": (1, 37, 37, 4, 1, False, True, 16, 32),
    "mha_non_causal_segments_default_blocks": (1, 24, 24, 2, 2, True, False, None, None),
    "gqa8_cross_attention": (1, 20, 50, 8, 1, False, True, 16, 16),
}


@gpu_kernel
@pytest.mark.parametrize("name", list(FLASH_CASES))
def test_flash_attention_float32(name):
    b, t, s, h, kvh, segmented, causal, block_q, block_k = FLASH_CASES[name]
    q, k, v, d_out = random_inputs(len(name), b, t, s, h, kvh, D)
    seg = packed_segments(t, b, t) if segmented else None
    check_flash_against_reference(IMPL, q, k, v, d_out, segment_ids=seg, causal=causal,
                                  block_q=block_q, block_k=block_k, tol=1e-5)


@gpu_kernel
def test_flash_attention_bfloat16():
    b, t, h, kvh = 2, 45, 4, 2
    q, k, v, d_out = random_inputs(11, b, t, t, h, kvh, D, jnp.bfloat16)
    errors = check_flash_against_reference(IMPL, q, k, v, d_out, segment_ids=packed_segments(12, b, t),
                                           causal=True, block_q=16, block_k=16, tol=1e-2, grad_tol=2e-2)
    assert errors["out"] > 0  # bf16 rounding is visible: the comparison is not vacuous


@gpu_kernel
def test_fully_masked_rows_are_zero_not_nan():
    """A row of only padding: every query and key masked."""
    q, k, v, d_out = random_inputs(13, 2, 20, 20, 2, 1, D)
    seg = np.ones((2, 20), np.int32)
    seg[1] = 0
    check_flash_against_reference(IMPL, q, k, v, d_out, segment_ids=seg, causal=True, block_q=16,
                                  block_k=16)


@gpu_kernel
@pytest.mark.parametrize("q_offset", [0, 37])
def test_q_offset_skips_key_blocks_past_the_diagonal(q_offset):
    """20 queries at keys [q_offset, q_offset + 20) of 96: the forward and dQ loops stop at the diagonal and
    the dK/dV programs of the later key blocks run an empty query-block range (NaN keys there are never read)."""
    q, k, v, d_out = random_inputs(16 + q_offset, 1, 20, 96, 4, 2, D)
    check_offset_skips_hidden_keys(IMPL, q, k, v, d_out, q_offset=q_offset, block_q=16, block_k=16)


# (B, Tq, S, H, KVH, lengths, block_k, num_splits)
DECODE_CASES = {
    "one_token_gqa2_ragged_cache": (3, 1, 40, 4, 2, [40, 0, 17], None, None),
    "three_tokens_gqa8_split": (3, 3, 64, 8, 1, [64, 2, 30], 16, 2),
    "one_token_mha_many_splits": (2, 1, 64, 2, 2, [5, 64], 16, 4),
}


@gpu_kernel
@pytest.mark.parametrize("name", list(DECODE_CASES))
def test_decode_attention_float32(name):
    b, tq, s, h, kvh, lengths, block_k, num_splits = DECODE_CASES[name]
    q, k, v, _ = random_inputs(len(name), b, tq, s, h, kvh, D)
    check_decode_against_reference(IMPL, q, k, v, jnp.asarray(lengths, jnp.int32), block_k=block_k,
                                   num_splits=num_splits)


@gpu_kernel
def test_decode_attention_bfloat16():
    q, k, v, _ = random_inputs(14, 2, 1, 48, 4, 2, D, jnp.bfloat16)
    check_decode_against_reference(IMPL, q, k, v, jnp.asarray([48, 9], jnp.int32), tol=1e-2, block_k=16,
                                   num_splits=3)


def test_kernels_lower_for_gpu(monkeypatch):
    """The compiled (not interpreted) kernels pass the Triton lowering for GPU."""
    flash, decode = lower_for_platform(monkeypatch, "gpu", "cuda")
    assert "__gpu$xla.gpu.triton" in flash and "__gpu$xla.gpu.triton" in decode
    for kernel in ("flash_attention_fwd", "flash_attention_dkdv", "flash_attention_dq"):
        assert kernel in flash
    assert "decode_attention" in decode
