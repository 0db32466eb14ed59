"""The Pallas TPU (Mosaic) attention kernels in the TPU interpreter (impl="interpret_tpu") vs the reference.

Same checks as test_attention_gpu.py with TPU-legal shapes (head dim 128, blocks of 128): forward
values and q/k/v gradients against the float32 `reference.py`, ||out - ref|| / ||ref|| < 1e-5 for
float32 and < 1e-2 (values) for bfloat16. The interpreter costs ~ms per grid step, so grids are a
few blocks each; they still cover partial last blocks, segment boundaries inside blocks, causal
tiles that are skipped (NaN there must not reach any output, also under a q_offset) and not fetched
(the index maps), GQA ratios 1, 2, 4 and 8, and decode rows of length 0.
"""
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.attention import tpu
from test_attention_common import (check_decode_against_reference, check_flash_against_reference,
                                   check_offset_skips_hidden_keys, lower_for_platform, packed_segments,
                                   random_inputs)

IMPL = "interpret_tpu"
D = 128


# (B, T, S, H, KVH, segmented, causal, dtype, tol, grad_tol)
FLASH_CASES = {
    "gqa2_segments_ragged_tail_f32": (1, 200, 200, 2, 1, True, True, jnp.float32, 1e-5, 1e-5),
    "gqa4_causal_bf16": (1, 130, 130, 4, 1, False, True, jnp.bfloat16, 1e-2, 2e-2),
    "mha_non_causal_cross_f32": (1, 64, 200, 2, 2, False, False, jnp.float32, 1e-5, 1e-5),
    "gqa8_segments_three_blocks_f32": (1, 300, 300, 8, 1, True, True, jnp.float32, 1e-5, 1e-5),
}


@pytest.mark.parametrize("name", list(FLASH_CASES))
def test_flash_attention(name):
    b, t, s, h, kvh, segmented, causal, dtype, tol, grad_tol = FLASH_CASES[name]
    q, k, v, d_out = random_inputs(len(name), b, t, s, h, kvh, D, dtype)
    seg = packed_segments(t, b, t) if segmented else None
    check_flash_against_reference(IMPL, q, k, v, d_out, segment_ids=seg, causal=causal, block_q=128,
                                  block_k=128, tol=tol, grad_tol=grad_tol)


def test_q_offset_skips_key_tiles_past_the_diagonal():
    """200 queries at keys [100, 300) of 512 (query blocks 100..227, 228..355): the tiles past each query
    block's diagonal, key block 3 for all, are not computed (NaN keys there change nothing)."""
    q, k, v, d_out = random_inputs(17, 1, 200, 512, 2, 1, D)
    check_offset_skips_hidden_keys(IMPL, q, k, v, d_out, q_offset=100, block_q=128, block_k=128)


@pytest.mark.parametrize("q_offset", [-200, 0, 100, 1000])
def test_causal_index_maps_fetch_no_block_for_hidden_tiles(q_offset):
    """A tile with a visible key fetches its own blocks; any other repeats the block index of the tile the
    pipeline runs next to it (the previous key block in the forward and dQ, the next query block in dK/dV),
    so no DMA is issued for it; all indices stay in bounds, also where no query sees a key block or no key
    is visible to a query block (q_offset -200) and where every tile is visible (1000)."""
    block_q, block_k, num_q_blocks, num_kv_blocks = 128, 256, 3, 4
    q_pos = q_offset + np.arange(num_q_blocks * block_q)
    visible = np.arange(num_kv_blocks * block_k)[None, :] <= q_pos[:, None]
    visible = visible.reshape(num_q_blocks, block_q, num_kv_blocks, block_k).any(axis=(1, 3))  # [q, kv] tiles
    i, j = np.arange(num_q_blocks)[:, None], np.arange(num_kv_blocks)[None, :]
    kv_fetch = np.asarray(tpu._kv_fetch_index(True, block_q, block_k, num_kv_blocks)(i, j, q_offset))
    q_fetch = np.asarray(tpu._q_fetch_index(True, block_q, block_k, num_q_blocks)(j, i, q_offset))
    assert (kv_fetch == j)[visible].all() and (q_fetch == i)[visible].all()
    assert (kv_fetch[:, 1:] == kv_fetch[:, :-1])[~visible[:, 1:]].all()
    assert (q_fetch[:-1] == q_fetch[1:])[~visible[:-1]].all()
    assert 0 <= kv_fetch.min() and kv_fetch.max() < num_kv_blocks
    assert 0 <= q_fetch.min() and q_fetch.max() < num_q_blocks


# (B, Tq, S, H, KVH, lengths, block_k)
DECODE_CASES = {
    "one_token_gqa2_two_blocks": (3, 1, 256, 4, 2, [256, 0, 100], 128),
    "two_tokens_gqa4_padded_cache": (2, 2, 200, 4, 1, [200, 1], None),
}


@pytest.mark.parametrize("name", list(DECODE_CASES))
def test_decode_attention(name):
    b, tq, s, h, kvh, lengths, block_k = DECODE_CASES[name]
    q, k, v, _ = random_inputs(len(name), b, tq, s, h, kvh, D)
    check_decode_against_reference(IMPL, q, k, v, jnp.asarray(lengths, jnp.int32), block_k=block_k)


def test_decode_attention_bfloat16():
    q, k, v, _ = random_inputs(15, 2, 1, 256, 4, 2, D, jnp.bfloat16)
    check_decode_against_reference(IMPL, q, k, v, jnp.asarray([256, 129], jnp.int32), tol=1e-2, block_k=128)


def test_kernels_lower_for_tpu(monkeypatch):
    """The compiled (not interpreted) kernels pass the Mosaic lowering for TPU."""
    flash, decode = lower_for_platform(monkeypatch, "tpu", "tpu")
    assert "tpu_custom_call" in flash and "tpu_custom_call" in decode
    for kernel in ("flash_attention_fwd", "flash_attention_dkdv", "flash_attention_dq"):
        assert kernel in flash
    assert "decode_attention" in decode
