"""flash_attention(return_lse=True, kv_segment_ids=...): the log-sum-exp output and separate key segments (what
sequence-parallel attention merges partial results with) against the float32 reference, values and gradients, on
the XLA path and both kernels in their interpreters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.attention import ops, reference
from test_attention_common import random_inputs, rel_err

# Query row 0: segments 1, 2, 3 and padding; key row 0 has no segment 3, so those queries see nothing.
Q_SEGMENTS = np.asarray([[1] * 4 + [2] * 4 + [3] * 2 + [0] * 2, [1] * 6 + [2] * 6], np.int32)
KV_SEGMENTS = np.asarray([[0] * 3 + [1] * 8 + [2] * 6 + [0] * 3, [2] * 7 + [1] * 13], np.int32)


def _outputs_and_grads(attend, q, k, v, d_out, lse_weights):
    """attend(q, k, v) -> (out, lse); the gradients of sum(out * d_out) + sum(finite lse * lse_weights)."""
    def loss(q, k, v):
        out, lse = attend(q, k, v)
        finite = jnp.where(jnp.isfinite(lse), lse, 0.0)
        return jnp.sum(out.astype(jnp.float32) * d_out) + jnp.sum(finite * lse_weights), (out, lse)
    (_, (out, lse)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, lse, grads


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("impl,head_dim", [("xla", 16), ("interpret", 16), ("interpret_tpu", 128)])
def test_lse_and_key_segments_match_the_reference(impl, head_dim, causal):
    b, t, s = Q_SEGMENTS.shape[0], Q_SEGMENTS.shape[1], KV_SEGMENTS.shape[1]
    q, k, v, d_out = random_inputs(3, b, t, s, 4, 2, head_dim)
    lse_weights = jnp.asarray(np.random.default_rng(4).standard_normal((b, 4, t)), jnp.float32)
    q_seg, kv_seg = jnp.asarray(Q_SEGMENTS), jnp.asarray(KV_SEGMENTS)
    out, lse, grads = _outputs_and_grads(
        lambda q, k, v: ops.flash_attention(q, k, v, segment_ids=q_seg, kv_segment_ids=kv_seg, causal=causal,
                                            impl=impl, return_lse=True), q, k, v, d_out, lse_weights)
    mask = reference.self_attention_mask(q_seg, kv_seg, causal=causal)
    want_out, want_lse, want_grads = _outputs_and_grads(
        lambda q, k, v: reference.masked_attention(q, k, v, mask, head_dim ** -0.5, return_lse=True),
        q, k, v, d_out, lse_weights)
    assert lse.shape == (b, 4, t) and lse.dtype == jnp.float32
    empty = ~np.asarray(mask).any(-1)                                      # [B, T]: rows that see no key
    assert empty[0, 8:].all() and not empty.all()
    np.testing.assert_array_equal(np.isneginf(lse), np.broadcast_to(empty[:, None], lse.shape))
    np.testing.assert_allclose(np.where(empty[:, None], 0, lse), np.where(empty[:, None], 0, want_lse),
                               rtol=1e-5, atol=1e-5)
    assert rel_err(out, want_out) < 1e-5
    np.testing.assert_array_equal(np.asarray(out)[empty], 0.0)
    for name, got, want in zip("qkv", grads, want_grads):
        assert rel_err(got, want) < 1e-5, name
