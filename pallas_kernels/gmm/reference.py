"""Obviously-correct grouped matmuls in plain jnp: one masked dense matmul per group (the test oracle).

Cost is E full [M,K]x[K,N] matmuls, so use it only at test sizes.
"""
import jax
import jax.numpy as jnp


def _row_masks(group_sizes: jnp.ndarray, m: int) -> jnp.ndarray:
    """[E, M] bool: mask[g, r] is True when row r belongs to group g."""
    ends = jnp.cumsum(group_sizes)
    starts = ends - group_sizes
    rows = jnp.arange(m)
    return (rows[None, :] >= starts[:, None]) & (rows[None, :] < ends[:, None])


def gmm_reference(lhs: jnp.ndarray, rhs: jnp.ndarray, group_sizes: jnp.ndarray, *,
                  transpose_rhs: bool = False) -> jnp.ndarray:
    """out[r] = lhs[r] @ rhs[g(r)] for rows r of group g; rows of no group are 0.

    Args:
      lhs: [M, K]; rhs: [E, K, N] ([E, N, K] when transpose_rhs); group_sizes: [E] int.
    Returns:
      [M, N] float32, computed at HIGHEST precision.
    """
    masks = _row_masks(group_sizes, lhs.shape[0])
    weights = jnp.swapaxes(rhs, 1, 2) if transpose_rhs else rhs
    out = jnp.zeros((lhs.shape[0], weights.shape[2]), jnp.float32)
    for g in range(weights.shape[0]):
        product = jnp.dot(lhs.astype(jnp.float32), weights[g].astype(jnp.float32),
                          precision=jax.lax.Precision.HIGHEST)
        out = out + jnp.where(masks[g][:, None], product, 0.0)
    return out


def tgmm_reference(lhs: jnp.ndarray, rhs: jnp.ndarray, group_sizes: jnp.ndarray) -> jnp.ndarray:
    """out[g] = lhs[rows of g]^T @ rhs[rows of g].

    Args:
      lhs: [M, K]; rhs: [M, N]; group_sizes: [E] int.
    Returns:
      [E, K, N] float32 (zeros for empty groups), computed at HIGHEST precision.
    """
    masks = _row_masks(group_sizes, lhs.shape[0])
    outs = []
    for g in range(group_sizes.shape[0]):
        masked_lhs = jnp.where(masks[g][:, None], lhs.astype(jnp.float32), 0.0)
        outs.append(jnp.dot(masked_lhs.T, rhs.astype(jnp.float32),
                            precision=jax.lax.Precision.HIGHEST))
    return jnp.stack(outs)
