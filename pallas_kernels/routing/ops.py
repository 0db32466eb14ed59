"""MoE routing in plain jnp: router top-k, token permutation by expert, weighted un-permute.

Plain jnp rather than Pallas: every op here is a gather, a small sort or an elementwise pass, which
XLA already runs near memory bandwidth (see pallas_kernels/routing/bench.py for the numbers). The
gathers get hand-written backward passes (custom_vjp) that are gathers again, because the backward
that autodiff derives for a gather is a scatter-add, which XLA cannot prove collision-free.

Layout: token t's j-th choice is "copy" f = t * k + j of the flattened [T * k] expert_ids.
`sort_idx[i]` is the copy that lands at sorted row i (copies stably sorted by expert id).
"""
import functools

import jax
import jax.numpy as jnp

SCORES = ("softmax", "sigmoid")


def _check_array(name: str, x, shape_doc: str, ndim: int, kind: str | None = None) -> None:
    """TypeError unless x is an array (of a float/int dtype when kind says so); ValueError unless
    it has ndim dims. Messages name the argument and the expected shape."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array {shape_doc}, got {type(x).__name__}")
    wanted = {"float": jnp.floating, "int": jnp.integer}.get(kind)
    if wanted is not None and not jnp.issubdtype(x.dtype, wanted):
        raise TypeError(f"{name} must be an array of {kind} dtype {shape_doc}, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got {x.shape}")


def router_topk(logits: jax.Array, k: int, *, score: str = "softmax", bias: jax.Array | None = None,
                normalize: bool = True, scaling: float = 1.0
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top-k expert choice per token.

    scores = softmax(logits) or sigmoid(logits) (f32). The experts are chosen by scores + bias
    (bias, e.g. DeepSeek-V3's aux-loss-free correction, only steers the choice); the weights are
    the unbiased scores of the chosen experts, divided by their sum when normalize, times scaling.

    Args:
      logits: [T, E] float router logits.
      k: experts per token, 1 <= k <= E.
      score: "softmax" or "sigmoid".
      bias: optional [E] float selection bias (no gradient flows through it).
      normalize: renormalise the k weights to sum to 1 (before scaling).
      scaling: multiplier of the weights (routed scaling factor).
    Returns:
      weights [T, k] f32 (differentiable w.r.t. logits), expert_ids [T, k] int32 (by decreasing
      selection score), scores [T, E] f32 (differentiable).
    """
    _check_array("logits", logits, "[T, E]", 2, "float")
    num_experts = logits.shape[1]
    if not isinstance(k, int) or not 1 <= k <= num_experts:
        raise ValueError(f"k must be an int in [1, E={num_experts}], got {k!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if bias is not None:
        _check_array("bias", bias, f"[E={num_experts}]", 1, "float")
        if bias.shape != (num_experts,):
            raise ValueError(f"bias must have shape [E={num_experts}], got {bias.shape}")
    return _router_topk(logits, bias, k, score, bool(normalize), float(scaling))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _router_topk(logits, bias, k, score, normalize, scaling):
    logits = logits.astype(jnp.float32)
    scores = jax.nn.softmax(logits, axis=-1) if score == "softmax" else jax.nn.sigmoid(logits)
    selection = scores if bias is None else scores + bias.astype(jnp.float32)
    _, expert_ids = jax.lax.top_k(jax.lax.stop_gradient(selection), k)
    weights = jnp.take_along_axis(scores, expert_ids, axis=-1)
    if normalize:
        # The epsilon only matters if every chosen sigmoid score underflows to 0.
        weights = weights / (jnp.sum(weights, axis=-1, keepdims=True) + 1e-20)
    return weights * scaling, expert_ids.astype(jnp.int32), scores


def permute(x: jax.Array, expert_ids: jax.Array, num_experts: int
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Copies each token once per chosen expert and sorts the copies by expert (stable).

    Args:
      x: [T, D] tokens.
      expert_ids: [T, k] int, values in [0, num_experts).
      num_experts: E.
    Returns:
      x_sorted [T * k, D] (x's dtype; differentiable w.r.t. x), group_sizes [E] int32 (copies per
      expert, the gmm group sizes), sort_idx [T * k] int32 (the copy at each sorted row).
    """
    _check_array("x", x, "[T, D]", 2)
    _check_array("expert_ids", expert_ids, "[T, k]", 2, "int")
    if expert_ids.shape[0] != x.shape[0]:
        raise ValueError(f"expert_ids has {expert_ids.shape[0]} tokens but x has {x.shape[0]}")
    if not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts must be a positive int, got {num_experts!r}")
    return _permute(x, expert_ids, num_experts)


@functools.partial(jax.jit, static_argnums=(2,))
def _permute(x, expert_ids, num_experts):
    flat = expert_ids.reshape(-1).astype(jnp.int32)
    sort_idx = jnp.argsort(flat, stable=True).astype(jnp.int32)
    group_sizes = jnp.zeros((num_experts,), jnp.int32).at[flat].add(1, mode="drop")
    return _gather_copies(x, sort_idx, expert_ids.shape[1]), group_sizes, sort_idx


def _inverse_permutation(sort_idx: jax.Array) -> jax.Array:
    """[n] int32: position of each copy in the sorted order (inverse of sort_idx)."""
    n = sort_idx.shape[0]
    return jnp.zeros((n,), jnp.int32).at[sort_idx].set(jnp.arange(n, dtype=jnp.int32),
                                                       unique_indices=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _gather_copies(x, sort_idx, k):
    """x_sorted[i] = x[sort_idx[i] // k]."""
    return x[sort_idx // k]


def _gather_copies_fwd(x, sort_idx, k):
    return _gather_copies(x, sort_idx, k), sort_idx


def _gather_copies_bwd(k, sort_idx, d_sorted):
    tokens = sort_idx.shape[0] // k
    per_copy = d_sorted[_inverse_permutation(sort_idx)].astype(jnp.float32)
    d_x = per_copy.reshape(tokens, k, -1).sum(axis=1).astype(d_sorted.dtype)
    return d_x, None


_gather_copies.defvjp(_gather_copies_fwd, _gather_copies_bwd)


def unpermute(y_sorted: jax.Array, sort_idx: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted combine of the expert outputs back into token order.

    out[t] = sum_j weights[t, j] * y_sorted[row of copy t * k + j], accumulated in f32.

    Args:
      y_sorted: [T * k, D] expert outputs in sorted order (as permute produced the inputs).
      sort_idx: [T * k] int, from permute.
      weights: [T, k] float, from router_topk.
    Returns:
      [T, D] in y_sorted's dtype; differentiable w.r.t. y_sorted and weights.
    """
    _check_array("y_sorted", y_sorted, "[T * k, D]", 2)
    _check_array("weights", weights, "[T, k]", 2, "float")
    copies = weights.shape[0] * weights.shape[1]
    _check_array("sort_idx", sort_idx, f"[T * k = {copies}]", 1, "int")
    if sort_idx.shape[0] != copies:
        raise ValueError(f"sort_idx must have shape [T * k = {copies}], got {sort_idx.shape}")
    if y_sorted.shape[0] != copies:
        raise ValueError(
            f"y_sorted has {y_sorted.shape[0]} rows but weights imply T * k = {copies}")
    return _combine_jit(y_sorted, sort_idx.astype(jnp.int32), weights)


@jax.custom_vjp
def _combine(y_sorted, sort_idx, weights):
    tokens, k = weights.shape
    per_copy = y_sorted[_inverse_permutation(sort_idx)].reshape(tokens, k, -1)
    out = jnp.einsum("tkd,tk->td", per_copy.astype(jnp.float32), weights.astype(jnp.float32))
    return out.astype(y_sorted.dtype)


def _combine_fwd(y_sorted, sort_idx, weights):
    return _combine(y_sorted, sort_idx, weights), (y_sorted, sort_idx, weights)


def _combine_bwd(residuals, d_out):
    y_sorted, sort_idx, weights = residuals
    tokens, k = weights.shape
    d_out32 = d_out.astype(jnp.float32)
    per_copy = y_sorted[_inverse_permutation(sort_idx)].reshape(tokens, k, -1)
    d_weights = jnp.einsum("tkd,td->tk", per_copy.astype(jnp.float32), d_out32)
    row_weight = weights.reshape(-1)[sort_idx].astype(jnp.float32)
    d_sorted = d_out32[sort_idx // k] * row_weight[:, None]
    return d_sorted.astype(y_sorted.dtype), None, d_weights.astype(weights.dtype)


_combine.defvjp(_combine_fwd, _combine_bwd)
_combine_jit = jax.jit(_combine)
