"""Dense one-hot formulations of the routing ops (the test oracle; O(T^2 k^2 D), test sizes only).

They share no code path with ops.py: the permutation is built from per-expert ranks (cumulative
one-hot counts) and applied as a dense 0/1 matrix product instead of argsort + gather; the top-k is
a dense mask instead of gathered weights. Gradients come from plain autodiff.
"""
import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def router_topk_dense(logits: jax.Array, k: int, *, score: str = "softmax", bias=None,
                      normalize: bool = True, scaling: float = 1.0) -> jax.Array:
    """[T, E] f32 dense routing weights: the chosen experts' weights, 0 elsewhere."""
    logits = logits.astype(jnp.float32)
    scores = jax.nn.softmax(logits, axis=-1) if score == "softmax" else jax.nn.sigmoid(logits)
    selection = scores if bias is None else scores + bias
    # An expert is chosen when fewer than k experts have a strictly larger selection score.
    rank = jnp.sum(jax.lax.stop_gradient(selection)[:, None, :]
                   > jax.lax.stop_gradient(selection)[:, :, None], axis=-1)
    dense = jnp.where(rank < k, scores, 0.0)
    if normalize:
        dense = dense / jnp.sum(dense, axis=-1, keepdims=True)
    return dense * scaling


def sorted_positions(expert_ids: jax.Array, num_experts: int) -> jax.Array:
    """[T * k] int32: the sorted row of each copy (expert offset + rank among the expert's copies)."""
    flat = expert_ids.reshape(-1)
    one_hot = jax.nn.one_hot(flat, num_experts, dtype=jnp.int32)  # [T*k, E]
    rank_within_expert = jnp.sum((jnp.cumsum(one_hot, axis=0) - 1) * one_hot, axis=1)
    counts = jnp.sum(one_hot, axis=0)
    offsets = jnp.cumsum(counts) - counts
    return (offsets[flat] + rank_within_expert).astype(jnp.int32)


def permute_dense(x: jax.Array, expert_ids: jax.Array, num_experts: int
                  ) -> tuple[jax.Array, jax.Array]:
    """(x_sorted [T*k, D] f32, group_sizes [E] int32) via a dense permutation matrix."""
    k = expert_ids.shape[1]
    positions = sorted_positions(expert_ids, num_experts)
    copies = jnp.repeat(x.astype(jnp.float32), k, axis=0)  # row t*k + j is token t
    permutation = jax.nn.one_hot(positions, positions.shape[0], dtype=jnp.float32).T
    group_sizes = jnp.sum(jax.nn.one_hot(expert_ids.reshape(-1), num_experts, dtype=jnp.int32), 0)
    return jnp.dot(permutation, copies, precision=_HIGHEST), group_sizes


def unpermute_dense(y_sorted: jax.Array, expert_ids: jax.Array, weights: jax.Array,
                    num_experts: int) -> jax.Array:
    """[T, D] f32: sum_j weights[t, j] * y_sorted[sorted row of copy (t, j)], dense matrices."""
    tokens, k = weights.shape
    positions = sorted_positions(expert_ids, num_experts)
    gather = jax.nn.one_hot(positions, positions.shape[0], dtype=jnp.float32)  # [copy, row]
    combine = jax.nn.one_hot(jnp.arange(tokens * k) // k, tokens, dtype=jnp.float32).T
    weighted = combine * weights.reshape(1, -1).astype(jnp.float32)  # [T, copy]
    return jnp.dot(jnp.dot(weighted, gather, precision=_HIGHEST), y_sorted.astype(jnp.float32),
                   precision=_HIGHEST)
