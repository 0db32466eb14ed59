"""SSD math on one chunk of one head, shared by the GPU kernel, the TPU kernel and the XLA path.

The recurrence (per batch row and head; ``h`` a [P, N] matrix, ``t`` the token):

    h_t = exp(dt_t * a) * h_{t-1} + dt_t * x_t b_t^T,     y_t = h_t c_t

with ``h_{t-1}`` taken as zeros before a token where ``starts`` is True. Over a chunk of L tokens
with incoming state ``h_in`` it is, exactly (``cum_i`` = sum_{j <= i} dt_j a inside the chunk, ``seg_i``
= the number of starts at chunk positions <= i):

    y_i   = sum_{j <= i, seg_j = seg_i} (c_i . b_j) exp(cum_i - cum_j) dt_j x_j   (intra-chunk, [L, L] @ [L, P])
          + [seg_i = 0] exp(cum_i) h_in c_i                                         (from the incoming state)
    h_out = [seg_last = 0] exp(cum_last) h_in
          + sum_{j: seg_j = seg_last} exp(cum_last - cum_j) dt_j x_j b_j^T          (what the chunk adds)

The per-token coefficients depend only on dt, a and starts; `chunk_vectors` computes them for all
chunks at once in plain jnp (elementwise and prefix sums over [B, H, T]: cheap next to the matmuls),
so the kernels need no in-kernel prefix sum (Mosaic has no cumsum lowering) and take each one in the
orientation it is used in: columns [L, 1] scale rows, rows [1, L] scale columns. The functions below
take values (never refs); every product runs in float32 at HIGHEST precision (inputs of any float
dtype are upcast after loading). That is the accurate choice, not the fast one: on a GPU it makes
Triton use IEEE float32 dots (no tensor cores), on a TPU multi-pass MXU products; bf16 or TF32
operands are the first thing to try when tuning on hardware (untimed so far).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_NN = (((1,), (0,)), ((), ()))  # a @ b
_TN = (((0,), (0,)), ((), ()))  # a.T @ b


def _dot(a, b, dims) -> jax.Array:
    return lax.dot_general(a.astype(jnp.float32), b.astype(jnp.float32), dims,
                           precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


class ChunkVectors(NamedTuple):
    """Per-token coefficients of each chunk, float32, leading dims [B, H, K] (K chunks of L tokens).

    cum_col [.., L, 1] / cum_row [.., 1, L]: within-chunk cumulative log decay cum_i.
    seg_col [.., L, 1] / seg_row [.., 1, L]: within-chunk segment index seg_i (count of starts <= i).
    dt_row [.., 1, L]: dt_j, the input scale of token j.
    to_end_col [.., L, 1]: exp(cum_last - cum_j) dt_j [seg_j = seg_last], token j's weight in h_out.
    from_state_col [.., L, 1]: exp(cum_i) [seg_i = 0], the incoming state's weight in y_i.
    carry [.., 1, 1]: exp(cum_last) [seg_last = 0], the incoming state's weight in h_out.
    """

    cum_col: jax.Array
    cum_row: jax.Array
    seg_col: jax.Array
    seg_row: jax.Array
    dt_row: jax.Array
    to_end_col: jax.Array
    from_state_col: jax.Array
    carry: jax.Array


def chunk_vectors(dt, a, starts) -> ChunkVectors:
    """ChunkVectors of dt float32 [B, H, K, L] (0 on padding), a [H] and starts [B, K, L] (any int/bool)."""
    cum = jnp.cumsum(dt * a.astype(jnp.float32)[None, :, None, None], axis=-1)
    seg = jnp.broadcast_to(jnp.cumsum(starts.astype(jnp.float32), axis=-1)[:, None], cum.shape)
    last_cum, last_seg = cum[..., -1:], seg[..., -1:]
    to_end = jnp.exp(jnp.where(seg == last_seg, last_cum - cum, -jnp.inf)) * dt
    from_state = jnp.exp(cum) * (seg == 0)
    carry = jnp.exp(last_cum) * (last_seg == 0)
    col, row = (lambda v: v[..., :, None]), (lambda v: v[..., None, :])
    return ChunkVectors(col(cum), row(cum), col(seg), row(seg), row(dt), col(to_end), col(from_state),
                        col(carry))


def intra_chunk(x, b, c, vec: ChunkVectors) -> jax.Array:
    """float32 [L, P]: y_i's share of the chunk's own tokens (x [L, P], b/c [L, N])."""
    size = x.shape[0]
    shape = (size, size)
    visible = ((lax.broadcasted_iota(jnp.int32, shape, 1) <= lax.broadcasted_iota(jnp.int32, shape, 0))
               & (vec.seg_col == vec.seg_row))
    decay = jnp.exp(jnp.where(visible, vec.cum_col - vec.cum_row, -jnp.inf))
    return _dot(_dot(c, b, _NT) * decay * vec.dt_row, x, _NN)


def from_state(c, state, vec: ChunkVectors) -> jax.Array:
    """float32 [L, P]: y_i's share of the incoming state (c [L, N], state [P, N])."""
    return vec.from_state_col * _dot(c, state, _NT)


def state_added(x, b, vec: ChunkVectors) -> jax.Array:
    """float32 [P, N]: what the chunk's tokens add to the state at its end."""
    return _dot(vec.to_end_col * x.astype(jnp.float32), b, _TN)


def chunk_step(x, b, c, vec: ChunkVectors, state):
    """One chunk with incoming state [P, N] float32 -> (y float32 [L, P], outgoing state [P, N])."""
    y = intra_chunk(x, b, c, vec) + from_state(c, state, vec)
    return y, vec.carry * state + state_added(x, b, vec)
