"""flash_attention(return_lse=True, kv_segment_ids=..., q_offset=...): the log-sum-exp output, separate key
segments and a traced query offset (what sequence-parallel attention merges partial results with, and places a
shard's queries by) against the float32 reference, values and gradients, on the XLA path and both kernels in
their interpreters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.attention import ops, reference
from test_attention_common import packed_segments, random_inputs, rel_err

# Query row 0: segments 1, 2, 3 and padding; key row 0 has no segment 3, so those queries see nothing.
Q_SEGMENTS = np.asarray([[1] * 4 + [2] * 4 + [3] * 2 + [0] * 2, [1] * 6 + [2] * 6], np.int32)
KV_SEGMENTS = np.asarray([[0] * 3 + [1] * 8 + [2] * 6 + [0] * 3, [2] * 7 + [1] * 13], np.int32)
IMPLS = [("xla", 16), ("interpret", 16), ("interpret_tpu", 128)]


def _outputs_and_grads(attend, q, k, v, d_out, lse_weights, *args):
    """attend(q, k, v, *args) -> (out, lse); the gradients of sum(out * d_out) + sum(finite lse * lse_weights),
    under one jit that traces args too."""
    def loss(q, k, v, *args):
        out, lse = attend(q, k, v, *args)
        finite = jnp.where(jnp.isfinite(lse), lse, 0.0)
        return jnp.sum(out.astype(jnp.float32) * d_out) + jnp.sum(finite * lse_weights), (out, lse)
    (_, (out, lse)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v, *args)
    return out, lse, grads


def _check_against_reference(impl, head_dim, q_seg, kv_seg, *, causal, q_offset=None, **blocks):
    """Asserts flash_attention(impl, return_lse=True) on random q [B, T, 4, D], k/v [B, S, 2, D] matches the
    reference masked by self_attention_mask (q_offset passed traced to both): out, lse (-inf exactly for rows
    that see no key, whose out is 0) and the gradients through both. Returns those rows, bool [B, T]."""
    (b, t), s = q_seg.shape, kv_seg.shape[1]
    q, k, v, d_out = random_inputs(3, b, t, s, 4, 2, head_dim)
    lse_weights = jnp.asarray(np.random.default_rng(4).standard_normal((b, 4, t)), jnp.float32)
    offset = () if q_offset is None else (jnp.int32(q_offset),)
    out, lse, grads = _outputs_and_grads(
        lambda q, k, v, *offset: ops.flash_attention(q, k, v, segment_ids=q_seg, kv_segment_ids=kv_seg,
                                                     causal=causal, impl=impl, return_lse=True,
                                                     q_offset=offset[0] if offset else None, **blocks),
        q, k, v, d_out, lse_weights, *offset)

    def want_attend(q, k, v, *offset):
        mask = reference.self_attention_mask(q_seg, kv_seg, causal=causal, q_offset=offset[0] if offset else 0)
        return reference.masked_attention(q, k, v, mask, head_dim ** -0.5, return_lse=True)

    want_out, want_lse, want_grads = _outputs_and_grads(want_attend, q, k, v, d_out, lse_weights, *offset)
    assert lse.shape == (b, 4, t) and lse.dtype == jnp.float32
    empty = np.asarray(jnp.isneginf(want_lse[:, 0]))                      # [B, T]: rows that see no key
    np.testing.assert_array_equal(np.isneginf(lse), np.broadcast_to(empty[:, None], lse.shape))
    np.testing.assert_allclose(np.where(empty[:, None], 0, lse), np.where(empty[:, None], 0, want_lse),
                               rtol=1e-5, atol=1e-5)
    assert rel_err(out, want_out) < 1e-5
    np.testing.assert_array_equal(np.asarray(out)[empty], 0.0)
    for name, got, want in zip("qkv", grads, want_grads):
        assert rel_err(got, want) < 1e-5, name
    return empty


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("impl,head_dim", IMPLS)
def test_lse_and_key_segments_match_the_reference(impl, head_dim, causal):
    empty = _check_against_reference(impl, head_dim, jnp.asarray(Q_SEGMENTS), jnp.asarray(KV_SEGMENTS),
                                     causal=causal)
    assert empty[0, 8:].all() and not empty.all()


# impl -> (T, S, blocks): T queries at keys [q_offset, q_offset + T) of a packed row of S keys (GQA 2).
OFFSET_SHAPES = {
    "xla": (32, 80, {}),
    "interpret": (32, 80, dict(block_q=16, block_k=16)),  # 2 x 5 blocks (backward: 16 x 16 too)
    "interpret_tpu": (200, 456, dict(block_q=128, block_k=128)),  # 2 x 4 blocks, both tails padded
}
OFFSET_CASES = [(impl, head_dim, q_offset) for impl, head_dim in IMPLS
                for q_offset in ([-100, 0, 100, 256] if impl == "interpret_tpu" else [-8, 0, 16, 48])]


@pytest.mark.parametrize("impl,head_dim,q_offset", OFFSET_CASES)
def test_traced_q_offset_matches_the_reference(impl, head_dim, q_offset):
    """Causal queries at a traced offset (a sequence shard's): T != S, segment ids with padding zeros; a
    negative offset puts the first queries before every key (they see none)."""
    t, s, blocks = OFFSET_SHAPES[impl]
    kv_seg = packed_segments(5, 2, s)
    q_pos = q_offset + np.arange(t)
    q_seg = kv_seg[:, np.maximum(q_pos, 0)]  # a query's segment is its key's (key 0's before the keys)
    empty = _check_against_reference(impl, head_dim, jnp.asarray(q_seg), jnp.asarray(kv_seg), causal=True,
                                      q_offset=q_offset, **blocks)
    np.testing.assert_array_equal(empty, (q_seg == 0) | (q_pos < 0))  # the others see at least their own key


@pytest.mark.parametrize("impl,head_dim", IMPLS)
def test_python_int_q_offsets_share_one_compile(impl, head_dim):
    """q_offset is an argument of the jitted call, never static: new values change the result, not the cache."""
    call = ops._flash_xla_call if impl == "xla" else ops._flash_kernel_call
    q, k, v, _ = random_inputs(6, 1, 8, 24, 2, 1, head_dim)
    before = call._cache_size()
    outs = [np.asarray(ops.flash_attention(q, k, v, impl=impl, q_offset=q_offset)) for q_offset in (0, 5, 16)]
    assert call._cache_size() - before <= 1
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
