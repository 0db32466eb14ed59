"""Helpers shared by the attention test files (this module holds no tests)."""
import numpy as np
import jax
import jax.numpy as jnp

from pallas_kernels.attention import reference
from kernel_lowering import lower_text


def rel_err(got, want) -> float:
    """||got - want|| / ||want|| in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def random_inputs(seed, b, t, s, h, kvh, d, dtype=jnp.float32):
    """Random q [B,T,H,D], k, v [B,S,KVH,D] (dtype) and a float32 cotangent like q."""
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal(shape), dtype)
               for shape in ((b, t, h, d), (b, s, kvh, d), (b, s, kvh, d)))
    return q, k, v, jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32)


def packed_segments(seed, b, t):
    """int32 [B, T]: segments 1, 2, 3 of random lengths, then a padding (0) tail."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(b):
        cuts = np.sort(rng.choice(np.arange(1, t), size=3, replace=False))
        row = np.zeros(t, np.int32)
        for i, (lo, hi) in enumerate(zip([0, *cuts[:2]], cuts)):
            row[lo:hi] = i + 1
        rows.append(row)
    return np.stack(rows)


def value_and_grads(fn, q, k, v, d_out):
    """fn(q, k, v) and its q/k/v gradients for the cotangent d_out (compiled, not op by op)."""
    def run(q, k, v, d_out):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(d_out.astype(out.dtype))
    return jax.jit(run)(q, k, v, d_out)


def check_flash_against_reference(impl, q, k, v, d_out, *, segment_ids, causal, block_q=None,
                                  block_k=None, tol=1e-5, grad_tol=None):
    """Asserts ops.flash_attention(impl) matches the float32 reference in value and q/k/v gradients.

    Inputs of any dtype are compared with the reference run on their float32 values. Padding
    queries (segment 0) must give exactly 0 output and 0 dq. Returns the measured errors.
    """
    from pallas_kernels.attention import ops

    out, grads = value_and_grads(
        lambda q, k, v: ops.flash_attention(q, k, v, segment_ids=segment_ids, causal=causal, impl=impl,
                                            block_q=block_q, block_k=block_k), q, k, v, d_out)
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    want, want_grads = value_and_grads(
        lambda q, k, v: reference.attention_reference(q, k, v, segment_ids=segment_ids, causal=causal),
        *f32, d_out.astype(q.dtype).astype(jnp.float32))
    assert out.dtype == q.dtype and [g.dtype for g in grads] == [q.dtype] * 3
    errors = {"out": rel_err(out, want)}
    errors.update({f"d{name}": rel_err(g, w) for name, g, w in zip("qkv", grads, want_grads)})
    grad_tol = tol if grad_tol is None else grad_tol
    assert errors["out"] < tol, errors
    assert all(errors[f"d{name}"] < grad_tol for name in "qkv"), errors
    if segment_ids is not None:
        padding = np.asarray(segment_ids) == 0
        np.testing.assert_array_equal(np.asarray(out, np.float32)[padding], 0.0)
        np.testing.assert_array_equal(np.asarray(grads[0], np.float32)[padding], 0.0)
    return errors


def check_decode_against_reference(impl, q, k, v, lengths, *, tol=1e-5, **kwargs):
    """Asserts ops.decode_attention(impl) matches the float32 reference; rows of length 0 give 0."""
    from pallas_kernels.attention import ops

    out = ops.decode_attention(q, k, v, lengths, impl=impl, **kwargs)
    want = jax.jit(reference.decode_attention_reference)(*(x.astype(jnp.float32) for x in (q, k, v)),
                                                         lengths)
    assert out.dtype == q.dtype and out.shape == q.shape
    error = rel_err(out, want)
    assert error < tol, error
    empty = np.asarray(lengths) == 0
    np.testing.assert_array_equal(np.asarray(out, np.float32)[empty], 0.0)
    return error


def check_offset_skips_hidden_keys(impl, q, k, v, d_out, *, q_offset: int, block_q: int, block_k: int):
    """Asserts that causal flash_attention(impl, q_offset) skips, forward and backward, the key blocks past
    the diagonal of every (padded) query block: NaN keys and values there change nothing.

    Computing such a block, even fully masked, would give NaN (0 * NaN in p @ v, ds @ k and ds.T @ q), so
    out and the q/k/v gradients must match the reference on the clean inputs (whose dk, dv are 0 there).
    """
    from pallas_kernels.attention import ops

    t, s = q.shape[1], k.shape[1]
    hidden = -(-(q_offset + -(-t // block_q) * block_q) // block_k) * block_k  # first key past every block
    assert 0 < hidden < s, (hidden, s)
    poison = lambda x: x.at[:, hidden:].set(jnp.nan)
    out, grads = value_and_grads(
        lambda q, k, v: ops.flash_attention(q, k, v, causal=True, q_offset=q_offset, impl=impl,
                                            block_q=block_q, block_k=block_k), q, poison(k), poison(v), d_out)
    ones_q, ones_k = jnp.ones(q.shape[:2], jnp.int32), jnp.ones(k.shape[:2], jnp.int32)
    mask = reference.self_attention_mask(ones_q, ones_k, causal=True, q_offset=q_offset)
    want, want_grads = value_and_grads(
        lambda q, k, v: reference.masked_attention(q, k, v, mask, q.shape[3] ** -0.5), q, k, v, d_out)
    assert rel_err(out, want) < 1e-5
    for name, got, ref in zip("qkv", grads, want_grads):
        assert rel_err(got, ref) < 1e-5, name  # NaN fails too


def lower_for_platform(monkeypatch, impl: str, platform: str) -> tuple[str, str]:
    """StableHLO text of flash fwd+bwd (with a traced q_offset) and of decode, lowered for `platform` from
    this CPU host.

    This runs the Pallas lowering of the real (not interpreted) kernels, Triton for "cuda" and
    Mosaic for "tpu", so unsupported operations or illegal block shapes fail here without the
    hardware (compiling the lowered kernels still needs it).
    """
    from pallas_kernels.attention import ops

    monkeypatch.setattr(ops, "resolve_impl", lambda requested: impl)
    q = jax.ShapeDtypeStruct((1, 200, 4, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 200, 2, 128), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((1, 200), jnp.int32)
    lengths = jax.ShapeDtypeStruct((1,), jnp.int32)
    q_offset = jax.ShapeDtypeStruct((), jnp.int32)

    def flash_fwd_bwd(q, k, v, seg, q_offset):
        def loss(q, k, v):
            out = ops.flash_attention(q, k, v, segment_ids=seg, block_q=128, block_k=128,  # 2 x 2 tiles
                                      q_offset=q_offset)
            return jnp.sum(out.astype(jnp.float32))
        return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    return (lower_text(flash_fwd_bwd, q, kv, kv, seg, q_offset, platform=platform),
            lower_text(lambda *args: ops.decode_attention(*args),  # a fresh function: no stale trace cache
                       jax.ShapeDtypeStruct((1, 1, 4, 128), jnp.bfloat16), kv, kv, lengths,
                       platform=platform))
