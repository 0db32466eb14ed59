"""Attention oracle and XLA path against a float64 numpy implementation; argument validation.

The numpy oracle loops over heads with explicit masks and writes the backward pass out by hand
(dq, dk, dv), so it shares no code with `reference.py` (jnp + autodiff). The kernel tests
(test_attention_gpu.py / test_attention_tpu.py) then compare the kernels with `reference.py`.
Error metric: ||out - ref|| / ||ref||.
"""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from pallas_kernels.attention import ops, reference, xla
from test_attention_common import packed_segments, random_inputs, rel_err, value_and_grads


def _np_mask(q_seg, kv_seg, causal, q_pos=None):
    """bool [B, T, S]; q_pos (int [B, T]) overrides the query index for the causal test."""
    b, t = q_seg.shape
    s = kv_seg.shape[1]
    q_pos = np.broadcast_to(np.arange(t), (b, t)) if q_pos is None else q_pos
    mask = (q_seg[:, :, None] == kv_seg[:, None, :]) & (q_seg[:, :, None] != 0)
    if causal:
        mask &= np.arange(s)[None, None, :] <= q_pos[:, :, None]
    return mask


def _np_attention(q, k, v, mask, scale, d_out=None):
    """float64 (out, (dq, dk, dv) or None); q [B,T,H,D], k/v [B,S,KVH,D], mask [B,T,S]."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, t, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros_like(q)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for bi in range(b):
        for hi in range(h):
            kv = hi // group
            s = scale * q[bi, :, hi] @ k[bi, :, kv].T
            s = np.where(mask[bi], s, -np.inf)
            row_max = np.max(s, axis=1, keepdims=True)
            p = np.where(mask[bi], np.exp(s - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
            denom = p.sum(axis=1, keepdims=True)
            p = p / np.where(denom > 0, denom, 1.0)
            out[bi, :, hi] = p @ v[bi, :, kv]
            if d_out is not None:
                do = np.asarray(d_out[bi, :, hi], np.float64)
                dp = do @ v[bi, :, kv].T
                ds = p * (dp - np.sum(p * dp, axis=1, keepdims=True))
                dq[bi, :, hi] = scale * ds @ k[bi, :, kv]
                dk[bi, :, kv] += scale * ds.T @ q[bi, :, hi]
                dv[bi, :, kv] += p.T @ do
    return out, (None if d_out is None else (dq, dk, dv))


# (H, KVH) covers GQA ratios 1, 2, 4, 8; each with a different masking mode.
CASES = [((2, 2), True, True), ((4, 2), False, True), ((4, 1), True, False), ((8, 1), True, True)]


@pytest.mark.parametrize("heads,causal,segmented", CASES)
@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_attention_matches_numpy(impl, heads, causal, segmented):
    h, kvh = heads
    b, t, d = 2, 19, 8
    q, k, v, d_out = random_inputs(h * 10 + kvh, b, t, t, h, kvh, d)
    seg = packed_segments(t, b, t) if segmented else None
    if impl == "reference":
        fn = lambda q, k, v: reference.attention_reference(q, k, v, segment_ids=seg, causal=causal)
    else:
        fn = lambda q, k, v: ops.flash_attention(q, k, v, segment_ids=seg, causal=causal, impl="xla")
    out, grads = value_and_grads(fn, q, k, v, d_out)
    ones = np.ones((b, t), np.int32)
    mask = _np_mask(ones if seg is None else seg, ones if seg is None else seg, causal)
    want, want_grads = _np_attention(q, k, v, mask, d ** -0.5, np.asarray(d_out))
    assert rel_err(out, want) < 1e-5
    for name, got, ref in zip("qkv", grads, want_grads):
        assert rel_err(got, ref) < 1e-5, name


def test_cross_attention_lengths_and_scale():
    """S != T without segments; a custom sm_scale."""
    q, k, v, d_out = random_inputs(3, 1, 7, 12, 4, 2, 8)
    out, grads = value_and_grads(
        lambda q, k, v: ops.flash_attention(q, k, v, causal=True, sm_scale=0.3, impl="xla"), q, k, v, d_out)
    mask = _np_mask(np.ones((1, 7), np.int32), np.ones((1, 12), np.int32), True)
    want, want_grads = _np_attention(q, k, v, mask, 0.3, np.asarray(d_out))
    assert rel_err(out, want) < 1e-5
    for got, ref in zip(grads, want_grads):
        assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("q_offset", [0, 6])
def test_xla_path_chunks_queries(q_offset):
    """q_chunk smaller than T (and not dividing it) gives the same values and gradients; each chunk's queries
    sit at the call's q_offset plus the chunk's start."""
    b, t, h, kvh, d = 2, 21, 4, 2, 8
    q, k, v, d_out = random_inputs(4, b, t, t + q_offset, h, kvh, d)
    kv_seg = packed_segments(5, b, t + q_offset)
    q_seg = kv_seg[:, q_offset:]
    fn = lambda q, k, v: xla.flash_attention_xla(q, k, v, jnp.asarray(q_seg), jnp.asarray(kv_seg), causal=True,
                                                 sm_scale=d ** -0.5, q_chunk=8, q_offset=jnp.int32(q_offset))
    out, grads = value_and_grads(fn, q, k, v, d_out)
    mask = _np_mask(q_seg, kv_seg, True, q_pos=np.broadcast_to(q_offset + np.arange(t), (b, t)))
    want, want_grads = _np_attention(q, k, v, mask, d ** -0.5, np.asarray(d_out))
    assert rel_err(out, want) < 1e-5
    for got, ref in zip(grads, want_grads):
        assert rel_err(got, ref) < 1e-5


def test_padding_queries_give_zero_output_and_gradient():
    b, t, h, kvh, d = 1, 10, 2, 1, 8
    q, k, v, d_out = random_inputs(6, b, t, t, h, kvh, d)
    seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 0, 0, 0]], jnp.int32)
    out, (dq, dk, dv) = value_and_grads(
        lambda q, k, v: ops.flash_attention(q, k, v, segment_ids=seg, impl="xla"), q, k, v, d_out)
    assert np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_array_equal(np.asarray(out[:, 7:]), 0.0)
    np.testing.assert_array_equal(np.asarray(dq[:, 7:]), 0.0)
    np.testing.assert_array_equal(np.asarray(dk[:, 7:]), 0.0)  # padding keys are never attended
    np.testing.assert_array_equal(np.asarray(dv[:, 7:]), 0.0)


def test_bf16_xla_path_within_bf16_tolerance():
    b, t, h, kvh, d = 2, 33, 4, 2, 16
    q, k, v, d_out = random_inputs(7, b, t, t, h, kvh, d, jnp.bfloat16)
    seg = packed_segments(8, b, t)
    out, grads = value_and_grads(
        lambda q, k, v: ops.flash_attention(q, k, v, segment_ids=seg, impl="xla"), q, k, v, d_out)
    assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
    want, want_grads = _np_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
                                     _np_mask(seg, seg, True), d ** -0.5,
                                     np.asarray(d_out.astype(jnp.bfloat16), np.float64))
    assert rel_err(out, want) < 1e-2
    for got, ref in zip(grads, want_grads):
        assert rel_err(got, ref) < 2e-2


def _np_decode(q, k, v, lengths, scale):
    b, tq = q.shape[:2]
    q_pos = np.asarray(lengths)[:, None] - tq + np.arange(tq)[None, :]
    ones_q, ones_k = np.ones((b, tq), np.int32), np.ones((b, k.shape[1]), np.int32)
    return _np_attention(q, k, v, _np_mask(ones_q, ones_k, True, q_pos=q_pos), scale)[0]


@pytest.mark.parametrize("tq,h,kvh", [(1, 4, 4), (1, 8, 2), (3, 4, 1), (2, 8, 1)])
@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_decode_matches_numpy(impl, tq, h, kvh):
    b, s, d = 4, 13, 8
    q, k, v, _ = random_inputs(tq * 100 + h, b, tq, s, h, kvh, d)
    lengths = jnp.asarray([s, 0, 5, 2], jnp.int32)  # full, empty, partial, shorter than Tq
    if impl == "reference":
        out = jax.jit(reference.decode_attention_reference)(q, k, v, lengths)
    else:
        out = ops.decode_attention(q, k, v, lengths, impl="xla")
    want = _np_decode(q, k, v, lengths, d ** -0.5)
    assert rel_err(out, want) < 1e-5
    np.testing.assert_array_equal(np.asarray(out[1]), 0.0)  # length 0: nothing to attend


def test_auto_impl_on_cpu_is_xla():
    assert ops.resolve_impl("auto") == "xla"
    q, k, v, _ = random_inputs(9, 1, 5, 5, 2, 1, 8)
    np.testing.assert_array_equal(np.asarray(ops.flash_attention(q, k, v)),
                                  np.asarray(ops.flash_attention(q, k, v, impl="xla")))


_Q = jnp.zeros((2, 8, 4, 16), jnp.float32)
_KV = jnp.zeros((2, 8, 2, 16), jnp.float32)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(q=_Q[0]), ValueError, "q must have shape"),
    (dict(k=_KV.astype(jnp.bfloat16)), TypeError, "share a dtype"),
    (dict(k=jnp.zeros((2, 8, 3, 16))), ValueError, "k and v must have the same shape"),
    (dict(k=jnp.zeros((2, 8, 3, 16)), v=jnp.zeros((2, 8, 3, 16))), ValueError, "multiple of k's KV heads"),
    (dict(k=jnp.zeros((2, 8, 2, 8)), v=jnp.zeros((2, 8, 2, 8))), ValueError, "share B"),
    (dict(q=_Q.astype(jnp.int32)), TypeError, "q must be float32"),
    (dict(segment_ids=jnp.ones((2, 7), jnp.int32)), ValueError, "segment_ids must have shape"),
    (dict(segment_ids=jnp.ones((2, 8), jnp.float32)), TypeError, "segment_ids must be an integer"),
    (dict(segment_ids=jnp.ones((2, 8), jnp.int32), k=jnp.zeros((2, 9, 2, 16)), v=jnp.zeros((2, 9, 2, 16))),
     ValueError, "S == T"),
    (dict(causal=1), TypeError, "causal must be a bool"),
    (dict(q_offset=1.0), TypeError, "q_offset must be None, an int"),
    (dict(q_offset=True), TypeError, "q_offset must be None, an int"),
    (dict(q_offset=2 ** 31), ValueError, "q_offset must fit in int32"),
    (dict(q_offset=jnp.zeros((1,), jnp.int32)), ValueError, "q_offset must be a scalar"),
    (dict(q_offset=jnp.float32(3)), TypeError, "q_offset must be an integer"),
    (dict(sm_scale="0.1"), TypeError, "sm_scale"),
    (dict(impl="cuda"), ValueError, "impl must be one of"),
    (dict(impl="gpu"), ValueError, "needs a gpu backend"),
    (dict(impl="interpret", block_q=24), ValueError, "block_q must be a power of two"),
    (dict(impl="interpret_tpu", block_k=64), ValueError, "block_k must be a multiple of 128"),
    (dict(impl="interpret_tpu"), ValueError, r"D % 128 == 0"),
    (dict(impl="interpret", q=jnp.zeros((2, 8, 4, 24)), k=jnp.zeros((2, 8, 2, 24)),
          v=jnp.zeros((2, 8, 2, 24))), ValueError, "power-of-two head dim"),
])
def test_flash_attention_rejects_bad_input(kwargs, error, match):
    args = dict(q=_Q, k=_KV, v=_KV)
    args.update(kwargs)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(error, match=match):
        ops.flash_attention(q, k, v, **args)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(lengths=jnp.ones((3,), jnp.int32)), ValueError, "lengths must have shape"),
    (dict(lengths=jnp.ones((2,), jnp.float32)), TypeError, "lengths must be an integer"),
    (dict(lengths=[1, 2]), TypeError, "lengths must be an int32 array"),
    (dict(k_cache=_KV[:, :, :1]), ValueError, "k_cache and v_cache must have the same shape"),
    (dict(impl="interpret", num_splits=0), ValueError, "num_splits must be a positive int"),
    (dict(impl="interpret_tpu", num_splits=2, q=jnp.zeros((2, 1, 4, 128)), k_cache=jnp.zeros((2, 8, 2, 128)),
          v_cache=jnp.zeros((2, 8, 2, 128))), ValueError, "num_splits is a GPU decode option"),
])
def test_decode_attention_rejects_bad_input(kwargs, error, match):
    args = dict(q=_Q[:, :1], k_cache=_KV, v_cache=_KV, lengths=jnp.ones((2,), jnp.int32))
    args.update(kwargs)
    q, k, v, lengths = (args.pop(name) for name in ("q", "k_cache", "v_cache", "lengths"))
    with pytest.raises(error, match=match):
        ops.decode_attention(q, k, v, lengths, **args)
