"""Dropless mixture of experts: top-k routing, tokens sorted by expert, grouped matmul, weighted combine.

Router: ``softmax`` scores, or ``sigmoid`` scores with a non-learned per-expert correction bias
(``router_bias``, DeepSeek-V3 / Nemotron-3 aux-loss-free balancing) that is added for *selection* only;
the combine weights come from the unbiased scores, optionally renormalised over the top-k, times
``routed_scaling_factor``. Experts run on the ``N*k`` token copies sorted by expert with
``jax.lax.ragged_dot`` (no ``[tokens, experts, D]`` tensor); ``moe_impl="dense"`` is a test-only
reference that runs every expert on every token. Shapes: ``N`` tokens, ``D`` d_model, ``E`` experts,
``F`` expert width, ``k`` experts per token.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nemocascade.model.config import ModelConfig
from nemocascade.model.kernels import pallas_op
from nemocascade.model.layers import MLP, activate, at_least_f32, dtype_of, param


def route(logits, bias, cfg: ModelConfig):
    """logits f32[N, E] -> (combine weights f32[N, k], expert ids int32[N, k], scores f32[N, E])."""
    if cfg.router_score == "softmax":
        scores = jax.nn.softmax(logits, axis=-1)
        selection = scores
    else:
        scores = jax.nn.sigmoid(logits)
        selection = scores + jax.lax.stop_gradient(bias)
    _, expert_ids = jax.lax.top_k(selection, cfg.num_experts_per_tok)
    weights = jnp.take_along_axis(scores, expert_ids, axis=-1)
    if cfg.norm_topk_prob:
        weights = weights / (jnp.sum(weights, axis=-1, keepdims=True) + 1e-20)
    return weights * cfg.routed_scaling_factor, expert_ids.astype(jnp.int32), scores


def expert_matmul(x_sorted, weights, group_sizes, impl: str):
    """[M, A] x [E, A, C] over rows grouped by expert (group_sizes int32[E]) -> [M, C].

    ``impl="xla"``: ``jax.lax.ragged_dot``; otherwise the Pallas grouped matmul ``pallas_kernels.gmm``.
    """
    if impl == "xla":
        return jax.lax.ragged_dot(x_sorted, weights, group_sizes)
    return pallas_op("gmm.ops", "gmm", impl)(x_sorted, weights, group_sizes, impl=impl)


class MoE(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, valid):
        """x [B, T, D], valid bool[B, T] (False: padding) -> (y [B, T, D], stats).

        stats (float32, padding excluded): ``expert_load`` [E] token copies routed to each expert,
        ``balance_loss`` (E * sum_e load fraction_e * mean normalised score_e; 1 when balanced) and
        ``z_loss`` (mean squared logsumexp of the router logits); both unweighted scalars.
        """
        cfg = self.cfg
        b, t, d = x.shape
        e, f, k = cfg.num_experts, cfg.expert_hidden_size, cfg.num_experts_per_tok
        dtype = dtype_of(cfg.dtype)
        tokens = x.reshape(b * t, d)
        stat_dtype = jnp.promote_types(dtype, jnp.float32)
        valid_flat = valid.reshape(b * t).astype(stat_dtype)
        router = param(self, "router", (d, e), ("embed", None), nn.initializers.normal(stddev=d ** -0.5), cfg)
        # The correction bias moves in steps of router_bias_update_rate (~1e-3): kept in float32 at least.
        bias = param(self, "router_bias", (e,), (None,), nn.initializers.zeros, cfg, at_least_float32=True)
        logits = at_least_f32(tokens) @ at_least_f32(router)
        weights, expert_ids, scores = route(logits, bias, cfg)

        init_in = nn.initializers.normal(stddev=d ** -0.5)
        w_up = param(self, "w_up", (e, d, f), ("expert", "embed", "expert_mlp"), init_in, cfg).astype(dtype)
        w_gate = None
        if cfg.moe_activation == "swiglu":
            w_gate = param(self, "w_gate", (e, d, f), ("expert", "embed", "expert_mlp"), init_in, cfg).astype(dtype)
        w_down = param(self, "w_down", (e, f, d), ("expert", "expert_mlp", "embed"),
                       nn.initializers.normal(stddev=f ** -0.5), cfg).astype(dtype)

        if cfg.moe_impl == "dense":
            routed = _dense_experts(tokens, w_gate, w_up, w_down, weights, expert_ids, cfg)
        else:
            routed = _sorted_experts(tokens, w_gate, w_up, w_down, weights, expert_ids, cfg)
        y = routed
        if cfg.resolved_shared_hidden > 0:
            y = y + MLP(cfg, cfg.resolved_shared_hidden, cfg.moe_activation, name="shared")(tokens)

        counts = jax.ops.segment_sum(jnp.repeat(valid_flat, k), expert_ids.reshape(-1), num_segments=e)
        num_valid = jnp.maximum(jnp.sum(valid_flat), 1.0)
        # Switch-style balance loss over valid tokens: E * sum_e (fraction routed to e) * (mean score of e).
        mean_scores = jnp.sum(scores / jnp.sum(scores, -1, keepdims=True) * valid_flat[:, None], 0) / num_valid
        balance = e * jnp.sum(counts / (num_valid * k) * mean_scores)
        z = jnp.sum(jnp.square(jax.nn.logsumexp(logits, axis=-1)) * valid_flat) / num_valid
        stats = {"expert_load": counts, "balance_loss": balance, "z_loss": z}
        return y.reshape(b, t, d), stats


def _expert_ffn(x, w_gate, w_up, w_down, group_sizes, cfg):
    up = expert_matmul(x, w_up, group_sizes, cfg.kernel_impl)
    gate = expert_matmul(x, w_gate, group_sizes, cfg.kernel_impl) if w_gate is not None else None
    return expert_matmul(activate(cfg.moe_activation, gate, up), w_down, group_sizes, cfg.kernel_impl)


def _sorted_experts(tokens, w_gate, w_up, w_down, weights, expert_ids, cfg):
    """Token copies sorted by expert -> ragged grouped matmuls -> weighted scatter-add back. [N, D]."""
    n, k = expert_ids.shape
    flat_ids = expert_ids.reshape(n * k)
    order = jnp.argsort(flat_ids, stable=True)
    source_token = order // k
    group_sizes = jnp.bincount(flat_ids, length=cfg.num_experts).astype(jnp.int32)
    out_sorted = _expert_ffn(tokens[source_token], w_gate, w_up, w_down, group_sizes, cfg)
    combine = weights.reshape(n * k)[order].astype(out_sorted.dtype)
    return jnp.zeros_like(tokens).at[source_token].add(out_sorted * combine[:, None])


def _dense_experts(tokens, w_gate, w_up, w_down, weights, expert_ids, cfg):
    """Test-only reference: every expert on every token, combined with a dense [N, E] weight matrix."""
    up = jnp.einsum("nd,edf->nef", tokens, w_up)
    gate = jnp.einsum("nd,edf->nef", tokens, w_gate) if w_gate is not None else None
    out = jnp.einsum("nef,efd->ned", activate(cfg.moe_activation, gate, up), w_down)
    dense_weights = jnp.sum(jax.nn.one_hot(expert_ids, cfg.num_experts, dtype=out.dtype) *
                            weights[..., None].astype(out.dtype), axis=1)
    return jnp.einsum("ned,ne->nd", out, dense_weights)
