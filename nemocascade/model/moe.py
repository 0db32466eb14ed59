"""Dropless mixture of experts: top-k routing, tokens sorted by expert, grouped matmul, weighted combine.

Router: ``softmax`` scores, or ``sigmoid`` scores with a non-learned per-expert correction bias
(``router_bias``, DeepSeek-V3 / Nemotron-3 aux-loss-free balancing) that is added for *selection* only;
the combine weights come from the unbiased scores, optionally renormalised over the top-k, times
``routed_scaling_factor``. Experts run on the ``N*k`` token copies sorted by expert with
``jax.lax.ragged_dot`` (no ``[tokens, experts, D]`` tensor); ``moe_impl="dense"`` is a test-only
reference that runs every expert on every token. Shapes: ``N`` tokens, ``D`` d_model, ``E`` experts,
``F`` expert width, ``k`` experts per token.

On a mesh (``jax.set_mesh``) the routed experts run inside ``jax.shard_map``, so that routing, sorting and the
grouped matmuls see only a device's own tokens (left to GSPMD, the top-k and the sort are all-gathered and every
device runs the experts on the whole batch's token copies):
* tokens are split over the batch axes (``data``, ``fsdp``, ``expert``) that divide the batch, and over
  ``sequence``: in calls without a cache each row's T tokens when it divides T (sequence parallelism,
  ``MoE(split_length=True)``), in the sampler's calls the rows (``layers.row_axis``);
* ``expert`` > 1 (expert parallelism): a device holds ``E / expert`` experts; the tokens of its ``expert`` group
  are all-gathered, it runs its own experts' copies and the partial outputs are reduce-scattered back. The
  grouped matmuls get all ``expert * n * k`` gathered copies as one static buffer (dropless: any share may be
  routed to this device), sorted with this device's experts' copies first (``n * k`` on average); the Pallas
  ``gmm`` only writes zeros for row tiles past them, what ``ragged_dot`` spends on them is unmeasured;
* ``tensor`` > 1: a device holds ``F / tensor`` of every expert's width; the down projection's partial sums are
  all-reduced over ``tensor``;
* ``fsdp``-sharded weights are all-gathered on entry (their gradients reduce-scattered by the transpose).
A mesh axis that does not divide its dimension is not used for it (the dimension stays replicated).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from nemocascade.model.config import ModelConfig
from nemocascade.model.kernels import on_shards, pallas_op
from nemocascade.model.layers import MLP, activate, at_least_f32, dtype_of, mesh_axes, param, row_axis


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
    split_length: bool = False  # the tokens may be split over the ``sequence`` mesh axis too (no cache)

    @nn.compact
    def __call__(self, x, valid):
        """x [B, T, D], valid bool[B, T] (False: padding) -> (y [B, T, D], stats).

        stats (float32, padding excluded): ``expert_load`` [E] token copies routed to each expert,
        ``balance_loss`` (E * sum_e load fraction_e * mean normalised score_e; 1 when balanced) and
        ``z_loss`` (mean squared logsumexp of the router logits); both unweighted scalars.
        """
        cfg = self.cfg
        b, t, d = x.shape
        e, f = cfg.num_experts, cfg.expert_hidden_size
        dtype = dtype_of(cfg.dtype)
        router = param(self, "router", (d, e), ("embed", None), nn.initializers.normal(stddev=d ** -0.5), cfg)
        # The correction bias moves in steps of router_bias_update_rate (~1e-3): kept in float32 at least.
        bias = param(self, "router_bias", (e,), (None,), nn.initializers.zeros, cfg, at_least_float32=True)
        init_in = nn.initializers.normal(stddev=d ** -0.5)
        w_up = param(self, "w_up", (e, d, f), ("expert", "embed", "expert_mlp"), init_in, cfg).astype(dtype)
        w_gate = None
        if cfg.moe_activation == "swiglu":
            w_gate = param(self, "w_gate", (e, d, f), ("expert", "embed", "expert_mlp"), init_in, cfg).astype(dtype)
        w_down = param(self, "w_down", (e, f, d), ("expert", "expert_mlp", "embed"),
                       nn.initializers.normal(stddev=f ** -0.5), cfg).astype(dtype)

        layout = (_ShardLayout.of_active_mesh(b, t, e, f, split_length=self.split_length) if cfg.moe_impl == "ragged"
                  else _ShardLayout())
        routed, sums = layout.run(functools.partial(_routed_experts, cfg=cfg, layout=layout),
                                  x, valid, router, bias, w_gate, w_up, w_down)
        y = routed
        if cfg.resolved_shared_hidden > 0:
            y = y + MLP(cfg, cfg.resolved_shared_hidden, cfg.moe_activation, name="shared")(x)
        return y, _router_stats(sums, cfg)


class _ShardLayout:
    """Which mesh axes split the MoE's tokens, experts and expert width (see the module docstring); all empty
    (no mesh, or ``moe_impl="dense"``): :meth:`run` calls the function directly."""

    def __init__(self, token_axes=(), expert_axis=None, tensor_axis=None, length_axes=()):
        self.token_axes = token_axes              # axes that split B (layers.row_axis)
        self.expert_axis = expert_axis            # "expert" when it splits E
        self.tensor_axis = tensor_axis            # "tensor" when it splits F
        self.length_axes = length_axes            # "sequence" when it splits T

    @classmethod
    def of_active_mesh(cls, batch: int, length: int, num_experts: int, expert_hidden: int, *,
                       split_length: bool) -> "_ShardLayout":
        """``split_length``: the ``length`` tokens of each row may be split over ``sequence``; else the rows are
        (``layers.row_axis``)."""
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty:
            return cls()
        size = lambda axis: mesh.shape.get(axis, 1)
        expert_axis = "expert" if size("expert") > 1 and num_experts % size("expert") == 0 else None
        tensor_axis = "tensor" if size("tensor") > 1 and expert_hidden % size("tensor") == 0 else None
        return cls(mesh_axes(row_axis(split_length), batch), expert_axis, tensor_axis,
                   mesh_axes("length", length) if split_length else ())

    @property
    def gathers_tokens(self) -> bool:
        """Expert parallelism over an axis that also splits the tokens: they are all-gathered over it."""
        return self.expert_axis is not None and self.expert_axis in self.token_axes

    def run(self, fn, x, valid, router, bias, w_gate, w_up, w_down):
        """``fn(x, valid, router, bias, w_gate, w_up, w_down) -> (routed [B, T, D], stat sums)`` on each
        device's shards (``jax.shard_map``), or directly when nothing is split."""
        tokens = P(self.token_axes or None, self.length_axes or None)
        w_in, w_out = P(self.expert_axis, None, self.tensor_axis), P(self.expert_axis, self.tensor_axis, None)
        return on_shards(fn, (tokens, tokens, P(), P(), None if w_gate is None else w_in, w_in, w_out),
                         (tokens, P()), x, valid, router, bias, w_gate, w_up, w_down)


def _routed_experts(x, valid, router, bias, w_gate, w_up, w_down, *, cfg: ModelConfig, layout: _ShardLayout):
    """One device's part of the routed experts: x [b, T, D] (its tokens), the expert weights it holds ->
    (routed outputs [b, T, D], stat sums over all devices' tokens (see :func:`_stat_sums`))."""
    b, t, d = x.shape
    if layout.gathers_tokens:
        x = jax.lax.all_gather(x, layout.expert_axis, axis=0, tiled=True)
        valid = jax.lax.all_gather(valid, layout.expert_axis, axis=0, tiled=True)
    tokens = x.reshape(-1, d)
    logits = at_least_f32(tokens) @ at_least_f32(router)
    weights, expert_ids, scores = route(logits, bias, cfg)
    if cfg.moe_impl == "dense":
        routed = _dense_experts(tokens, w_gate, w_up, w_down, weights, expert_ids, cfg)
    else:
        first = 0 if layout.expert_axis is None else jax.lax.axis_index(layout.expert_axis) * w_up.shape[0]
        routed = _sorted_experts(tokens, w_gate, w_up, w_down, weights, expert_ids, first, cfg)
    routed = routed.reshape(x.shape)
    if layout.tensor_axis is not None:
        routed = jax.lax.psum(routed, layout.tensor_axis)
    if layout.gathers_tokens:
        routed = jax.lax.psum_scatter(routed, layout.expert_axis, scatter_dimension=0, tiled=True)
    elif layout.expert_axis is not None:
        routed = jax.lax.psum(routed, layout.expert_axis)
    valid = valid.reshape(-1)
    if layout.gathers_tokens:  # each device counts its own tokens' routing, a slice of its group's
        own = [jax.lax.dynamic_slice_in_dim(a, jax.lax.axis_index(layout.expert_axis) * b * t, b * t)
               for a in (logits, scores, expert_ids, valid)]
        logits, scores, expert_ids, valid = own
    sums = _stat_sums(logits, scores, expert_ids, valid, cfg)
    split = layout.token_axes + layout.length_axes
    return routed, jax.lax.psum(sums, split) if split else sums


def _stat_sums(logits, scores, expert_ids, valid, cfg: ModelConfig) -> dict:
    """Sums over the valid tokens of logits f32[N, E] / scores f32[N, E] / expert_ids int32[N, k]:
    ``counts`` [E] copies per expert, ``scores`` [E] normalised scores, ``z`` squared logsumexp, ``tokens``."""
    valid = valid.astype(logits.dtype)
    k = expert_ids.shape[-1]
    return {"counts": jax.ops.segment_sum(jnp.repeat(valid, k), expert_ids.reshape(-1), num_segments=cfg.num_experts),
            "scores": jnp.sum(scores / jnp.sum(scores, -1, keepdims=True) * valid[:, None], 0),
            "z": jnp.sum(jnp.square(jax.nn.logsumexp(logits, axis=-1)) * valid),
            "tokens": jnp.sum(valid)}


def _router_stats(sums: dict, cfg: ModelConfig) -> dict:
    """The MoE statistics (see ``MoE``) from the batch's :func:`_stat_sums`."""
    e, k = cfg.num_experts, cfg.num_experts_per_tok
    num_valid = jnp.maximum(sums["tokens"], 1.0)
    # Switch-style balance loss over valid tokens: E * sum_e (fraction routed to e) * (mean score of e).
    balance = e * jnp.sum(sums["counts"] / (num_valid * k) * sums["scores"] / num_valid)
    return {"expert_load": sums["counts"], "balance_loss": balance, "z_loss": sums["z"] / num_valid}


def _expert_ffn(x, w_gate, w_up, w_down, group_sizes, cfg):
    up = expert_matmul(x, w_up, group_sizes, cfg.kernel_impl)
    gate = expert_matmul(x, w_gate, group_sizes, cfg.kernel_impl) if w_gate is not None else None
    return expert_matmul(activate(cfg.moe_activation, gate, up), w_down, group_sizes, cfg.kernel_impl)


def _sorted_experts(tokens, w_gate, w_up, w_down, weights, expert_ids, first_expert, cfg):
    """Token copies sorted by expert -> ragged grouped matmuls -> weighted scatter-add back. [N, D].

    The weights hold experts ``first_expert .. first_expert + E_local - 1`` (all E without expert
    parallelism): the copies of those experts are sorted to the front (by ``(id - first) mod E``), the
    grouped matmuls run on them and the other copies contribute nothing.
    """
    n, k = expert_ids.shape
    num_local = w_up.shape[0]
    flat_ids = expert_ids.reshape(n * k)
    order = jnp.argsort((flat_ids - first_expert) % cfg.num_experts, stable=True)
    source_token = order // k
    counts = jnp.bincount(flat_ids, length=cfg.num_experts).astype(jnp.int32)
    group_sizes = jax.lax.dynamic_slice(counts, (first_expert,), (num_local,))
    out_sorted = _expert_ffn(tokens[source_token], w_gate, w_up, w_down, group_sizes, cfg)
    combine = weights.reshape(n * k)[order].astype(out_sorted.dtype)
    if num_local < cfg.num_experts:  # rows past the local experts' copies belong to other devices
        combine = jnp.where(jnp.arange(n * k) < jnp.sum(group_sizes), combine, 0)
    return jnp.zeros_like(tokens).at[source_token].add(out_sorted * combine[:, None])


def _dense_experts(tokens, w_gate, w_up, w_down, weights, expert_ids, cfg):
    """Test-only reference: every expert on every token, combined with a dense [N, E] weight matrix."""
    up = jnp.einsum("nd,edf->nef", tokens, w_up)
    gate = jnp.einsum("nd,edf->nef", tokens, w_gate) if w_gate is not None else None
    out = jnp.einsum("nef,efd->ned", activate(cfg.moe_activation, gate, up), w_down)
    dense_weights = jnp.sum(jax.nn.one_hot(expert_ids, cfg.num_experts, dtype=out.dtype) *
                            weights[..., None].astype(out.dtype), axis=1)
    return jnp.einsum("ned,ne->nd", out, dense_weights)
