"""The XLA path: grouped matmuls as `jax.lax.ragged_dot_general` (what impl="xla" runs)."""
import jax
import jax.numpy as jnp


def gmm_xla(lhs: jnp.ndarray, rhs: jnp.ndarray, group_sizes: jnp.ndarray, *,
            transpose_rhs: bool, out_dtype: jnp.dtype) -> jnp.ndarray:
    """[M, K] x [E, K, N] ([E, N, K] when transpose_rhs) -> [M, N] out_dtype, f32 accumulation."""
    rhs_contracting = 2 if transpose_rhs else 1
    dims = jax.lax.RaggedDotDimensionNumbers(
        dot_dimension_numbers=(([1], [rhs_contracting]), ([], [])),
        lhs_ragged_dimensions=[0],
        rhs_group_dimensions=[0],
    )
    out = jax.lax.ragged_dot_general(lhs, rhs, group_sizes, dims,
                                     preferred_element_type=jnp.float32)
    return out.astype(out_dtype)


def tgmm_xla(lhs: jnp.ndarray, rhs: jnp.ndarray, group_sizes: jnp.ndarray, *,
             out_dtype: jnp.dtype) -> jnp.ndarray:
    """[M, K], [M, N] -> [E, K, N] out_dtype: per-group lhs^T @ rhs (ragged contracting dim)."""
    dims = jax.lax.RaggedDotDimensionNumbers(
        dot_dimension_numbers=(([0], [0]), ([], [])),
        lhs_ragged_dimensions=[0],
        rhs_group_dimensions=[],
    )
    out = jax.lax.ragged_dot_general(lhs, rhs, group_sizes, dims,
                                     preferred_element_type=jnp.float32)
    return out.astype(out_dtype)
