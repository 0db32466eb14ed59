"""Attention math on one (query block, key block) tile, shared by the GPU and TPU kernels.

The functions take values already loaded from refs (never refs), so the Triton-lowered and the
Mosaic-lowered kernels run the same masking, online-softmax and gradient formulas, and so does the
jnp reference (through `attend_mask` / `decode_mask`). Logits, probabilities and softmax statistics
are float32; matmul operands stay in the input dtype (bf16 feeds the tensor cores / MXU) with float32
accumulation.

Softmax statistics per query row: m (running max of the scaled logits, starts at MASK_VALUE),
l (running sum of exp(s - m)), acc (running sum of exp(s - m) * v). A row with no visible key keeps
l == 0 and finalizes to output 0 and lse = +inf, so exp(s - lse) == 0 in the backward pass.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pallas_kernels.backend import dot_precision

# Finite "minus infinity": m_prev - m_new stays finite (exp -> 0 or 1, never NaN).
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)

_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_NN = (((1,), (0,)), ((), ()))  # a @ b


def dot_nt(a: jax.Array, b: jax.Array) -> jax.Array:
    """a [M, K] @ b[N, K].T -> [M, N] float32 (IEEE float32 products for float32 inputs, not TF32)."""
    return lax.dot_general(a, b, _NT, precision=dot_precision(a, b), preferred_element_type=jnp.float32)


def dot_nn(a: jax.Array, b: jax.Array) -> jax.Array:
    """a [M, K] @ b [K, N] -> [M, N] float32 (IEEE float32 products for float32 inputs, not TF32)."""
    return lax.dot_general(a, b, _NN, precision=dot_precision(a, b), preferred_element_type=jnp.float32)


def attend_mask(q_pos, k_pos, q_seg, k_seg, *, causal: bool) -> jax.Array:
    """bool, the broadcast shape of the inputs: query may attend key.

    A query attends a key iff both lie in the same non-zero segment and, when causal, the key's
    position is <= the query's. Positions and segment ids are int32; any broadcastable shapes
    (row vectors for keys and column vectors for queries, or the transpose).
    """
    mask = (q_seg == k_seg) & (q_seg != 0)
    if causal:
        mask = mask & (k_pos <= q_pos)
    return mask


def decode_mask(q_pos, k_pos, kv_len: int) -> jax.Array:
    """bool, broadcast shape: a decode query at cache slot q_pos sees slots k_pos <= q_pos, k_pos < kv_len."""
    return (k_pos <= q_pos) & (k_pos < kv_len)


def causal_kv_block_count(q_block, block_q: int, block_k: int, num_kv_blocks: int, q_offset=0):
    """Number of leading key blocks that hold a key visible to query block q_block (int32 scalar).

    Query i sits at key index i + q_offset (int32 scalar, any sign); the count is in [0, num_kv_blocks].
    """
    visible = jnp.maximum(q_block * block_q + block_q + q_offset, 0)  # keys [0, visible) are not after a query
    return jnp.minimum(lax.div(visible + block_k - 1, block_k), num_kv_blocks)


def causal_first_q_block(kv_block, block_q: int, block_k: int, q_offset=0):
    """Index of the first query block with a query that can see key block kv_block (int32 scalar).

    Query i sits at key index i + q_offset; the result is >= 0 and may be past the last query block
    (no query sees the key block).
    """
    return lax.div(jnp.maximum(kv_block * block_k - q_offset, 0), block_q)


def _as_columns(stat: jax.Array, like: jax.Array) -> jax.Array:
    """Per-row statistic [..., M] or [..., M, 1] -> [..., M, 1], to broadcast against like [..., M, N]."""
    return stat if stat.ndim == like.ndim else stat[..., None]


def online_softmax_update(m_prev, l_prev, acc_prev, s, mask, v):
    """Folds one key block into the running softmax of a query block.

    Args:
      m_prev, l_prev: float32 [M] or [M, 1] (the result keeps the same shape).
      acc_prev: float32 [M, D].
      s: float32 [M, N] scaled logits; mask: bool [M, N]; v: [N, D] values (matmul dtype).
    Returns:
      (m, l, acc) updated.
    """
    keepdims = m_prev.ndim == 2
    s = jnp.where(mask, s, MASK_VALUE)
    m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=keepdims))
    p = jnp.where(mask, jnp.exp(s - _as_columns(m_new, s)), 0.0)
    alpha = jnp.exp(m_prev - m_new)
    l_new = alpha * l_prev + jnp.sum(p, axis=1, keepdims=keepdims)
    acc_new = _as_columns(alpha, acc_prev) * acc_prev + dot_nn(p.astype(v.dtype), v)
    return m_new, l_new, acc_new


def finalize(m, l, acc):
    """(out float32 [..., M, D], lse float32 shaped like m) from the softmax statistics.

    Rows that saw no key (l == 0) give out 0 and lse +inf.
    """
    empty = l == 0.0
    safe_l = jnp.where(empty, 1.0, l)
    out = acc / _as_columns(safe_l, acc)
    lse = jnp.where(empty, jnp.inf, m + jnp.log(safe_l))
    return out, lse


def dq_block(q, k, v, do, lse, delta, mask, sm_scale: float) -> jax.Array:
    """dL/dq contribution of one key block, rows = queries.

    q, do [M, D]; k, v [N, D]; lse, delta float32 [M, 1]; mask bool [M, N] -> float32 [M, D].
    """
    p = jnp.where(mask, jnp.exp(dot_nt(q, k) * sm_scale - lse), 0.0)
    ds = p * (dot_nt(do, v) - delta)
    return dot_nn(ds.astype(k.dtype), k) * sm_scale


def dkdv_block(q, k, v, do, lse, delta, mask_t, sm_scale: float):
    """(dL/dk, dL/dv) contributions of one query block, rows = keys (the transposed problem).

    q, do [M, D]; k, v [N, D]; lse, delta float32 [1, M]; mask_t bool [N, M] -> two float32 [N, D].
    """
    p_t = jnp.where(mask_t, jnp.exp(dot_nt(k, q) * sm_scale - lse), 0.0)
    dv = dot_nn(p_t.astype(do.dtype), do)
    ds_t = p_t * (dot_nt(v, do) - delta)
    dk = dot_nn(ds_t.astype(q.dtype), q) * sm_scale
    return dk, dv
