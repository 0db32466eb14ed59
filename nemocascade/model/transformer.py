"""The decoder and its functional face: ``init_params``, ``forward``, ``init_cache``.

``forward(params, cfg, tokens, *, positions=None, segment_ids=None, cache=None) -> (logits, aux)``:
tokens int32[B, T]; segment_ids int32[B, T] (0 = padding; packed rows number their segments 1, 2, ...);
positions default to the offset inside each segment (or to the cache slot when a cache is given).
Logits are float32[B, T, V] (float64 for float64 configs), whatever the compute dtype. ``aux``:
``moe_aux_loss`` and ``router_z_loss`` (weighted by ``aux_loss_weight`` / ``router_z_loss_weight``, scalars
averaged over MoE layers), their unweighted ``balance_loss`` / ``z_loss``, ``expert_load``
f32[num_moe_layers, E] (valid-token copies routed to each expert, MoE layers in layer order), and with a
cache, ``cache`` (the updated cache; see ``init_cache``, ``attention.py`` for the slot rule and ``mamba.py``
for the Mamba-2 layers' conv and SSM states).
Padding tokens (segment 0) are attended by no other token and count in no MoE statistic; their own
outputs are meaningless (and get no gradient from a loss that masks them).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from nemocascade.model.attention import Attention
from nemocascade.model.config import ModelConfig
from nemocascade.model.layers import MLP, RMSNorm, at_least_f32, constrain, dtype_of, param, row_axis
from nemocascade.model.mamba import Mamba2, init_layer_cache
from nemocascade.model.moe import MoE
from nemocascade.model.sequence_layout import from_layout, to_layout


class Block(nn.Module):
    """One layer: pre-norm attention and/or pre-norm MoE / MLP, or a pre-norm Mamba-2 mixer, each with a
    residual. ``split_length``: the call has no cache, so the tokens may be split over the ``sequence`` mesh axis
    (sequence parallelism; see ``Decoder``)."""

    cfg: ModelConfig
    kind: str
    prefill: bool = False  # the cache is empty (see Attention)
    split_length: bool = False

    @nn.compact
    def __call__(self, x, positions, segment_ids, layer_cache, lengths):
        cfg, stats, new_cache = self.cfg, None, None
        rows, length = row_axis(self.split_length), "length" if self.split_length else None
        if "attention" in self.kind:
            h, new_cache = Attention(cfg, prefill=self.prefill, split_length=self.split_length, name="attention")(
                RMSNorm(cfg, name="attention_norm")(x), positions, segment_ids, layer_cache, lengths)
            x = constrain(x + h, rows, length, None)
        if self.kind == "mamba":
            h, new_cache = Mamba2(cfg, split_length=self.split_length, name="mamba")(
                RMSNorm(cfg, name="mamba_norm")(x), segment_ids, layer_cache)
            x = constrain(x + h, rows, length, None)
        if "moe" in self.kind:
            h, stats = MoE(cfg, split_length=self.split_length, name="moe")(RMSNorm(cfg, name="moe_norm")(x),
                                                                          segment_ids > 0)
            x = constrain(x + h, rows, length, None)
        elif "mlp" in self.kind:
            x = x + MLP(cfg, cfg.mlp_hidden_size, cfg.mlp_activation, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x))
            x = constrain(x, rows, length, None)
        return x, stats, new_cache


class Decoder(nn.Module):
    """Embedding, layers, final norm, then the LM head (``with_head=False``: the normed hidden states).
    ``prefill``: the cache is empty (see ``Attention``).

    Sequence parallelism: a call without a cache splits every row's tokens over the ``sequence`` mesh axis when
    it divides T, in the zigzag layout of ``sequence_layout.py`` (each layer's sharding constraint; attention
    all-gathers the keys and values, Mamba-2 passes its conv window and SSM state across the chunks, the MoE
    routes each device's own tokens). A call with a
    cache (the sampler's prefill and decode) keeps each row's tokens whole and splits its rows over the
    ``sequence`` devices as well as the batch axes (``layers.row_axis``)."""

    cfg: ModelConfig
    with_head: bool = True
    prefill: bool = False

    @nn.compact
    def __call__(self, tokens, positions, segment_ids, cache=None):
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        embed = param(self, "embed", (cfg.vocab_size, cfg.d_model), ("vocab", "embed"),
                      nn.initializers.normal(stddev=1.0), cfg)
        split_length = cache is None
        if split_length:  # the tokens of a sequence-parallel call in the zigzag layout (sequence_layout.py)
            tokens, positions, segment_ids = (to_layout(a, cfg) for a in (tokens, positions, segment_ids))
        x = constrain(embed[tokens].astype(dtype), row_axis(split_length), "length" if split_length else None, None)
        block_cls = Block
        if cfg.remat != "none":
            policy = None if cfg.remat == "full" else jax.checkpoint_policies.checkpoint_dots
            block_cls = nn.remat(Block, policy=policy, static_argnums=())
        lengths = None if cache is None else cache["lengths"]
        stats, new_layers = [], {}
        for i, kind in enumerate(cfg.layer_kinds):
            name = f"layer_{i}"
            layer_cache = None if cache is None or name not in cache["layers"] else cache["layers"][name]
            x, layer_stats, layer_new = block_cls(cfg, kind, prefill=self.prefill, split_length=split_length,
                                                  name=name)(
                x, positions, segment_ids, layer_cache, lengths)
            if layer_stats is not None:
                stats.append(layer_stats)
            if layer_new is not None:
                new_layers[name] = layer_new
        x = RMSNorm(cfg, name="final_norm")(x)
        if split_length:
            x = from_layout(x, cfg)
        if not self.with_head:
            return at_least_f32(x), stats, new_layers
        if cfg.tie_embeddings:
            logits = jnp.einsum("btd,vd->btv", x, embed.astype(dtype))
        else:
            head = param(self, "lm_head", (cfg.d_model, cfg.vocab_size), ("embed", "vocab"),
                         nn.initializers.normal(stddev=cfg.d_model ** -0.5), cfg)
            logits = x @ head.astype(dtype)
        return at_least_f32(logits), stats, new_layers


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """int32[B, T]: offset of each token inside its segment (restarts wherever the segment id changes)."""
    t = segment_ids.shape[1]
    index = jnp.arange(t, dtype=jnp.int32)[None, :]
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                              segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    return index - start_index


def init_params(cfg: ModelConfig, rng: jax.Array):
    """Plain nested-dict params (``param_dtype``) from ``rng``."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = Decoder(cfg).init(rng, tokens, jnp.zeros_like(tokens), jnp.ones_like(tokens))
    return nn.meta.unbox(variables["params"])


def abstract_params(cfg: ModelConfig):
    """(``cfg``'s params as a pytree of ``jax.ShapeDtypeStruct``, the params-shaped pytree of their logical axis
    names): one trace per config and x64 mode, cached; treat both as read-only."""
    return _abstract_params(cfg, jax.config.jax_enable_x64)


@functools.lru_cache(maxsize=16)
def _abstract_params(cfg: ModelConfig, x64: bool):
    del x64  # a key only: float64 params are float32 outside x64 mode
    tokens = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda r: Decoder(cfg).init(r, tokens, tokens, tokens + 1), jax.random.PRNGKey(0))
    return nn.meta.unbox(boxed["params"]), nn.get_partition_spec(boxed["params"])


def logical_axes(cfg: ModelConfig):
    """Params-shaped pytree of logical axis-name tuples (for ``sharding.py``)."""
    return abstract_params(cfg)[1]


def _check_inputs(tokens, segment_ids, positions, cache, cfg: ModelConfig):
    """Shape/dtype errors at trace time, before anything is compiled."""
    for name, arr in (("tokens", tokens), ("segment_ids", segment_ids), ("positions", positions)):
        if arr is None:
            continue
        if not jnp.issubdtype(jnp.result_type(arr), jnp.integer):
            raise TypeError(f"{name} must be an integer array (int32[B, T]), got dtype {jnp.result_type(arr)}")
        if jnp.ndim(arr) != 2:
            raise ValueError(f"{name} must be int32[B, T], got shape {jnp.shape(arr)}")
        if jnp.shape(arr) != jnp.shape(tokens):
            raise ValueError(f"{name} shape {jnp.shape(arr)} differs from tokens shape {jnp.shape(tokens)}")
    if cache is None:
        return
    layers = _cached_layer_names(cfg)
    if set(cache) != {"lengths", "layers"} or set(cache["layers"]) != set(layers):
        raise ValueError(f"cache must have init_cache's structure: 'lengths' and 'layers' with {layers}")
    if jnp.shape(cache["lengths"]) != (tokens.shape[0],):
        raise ValueError(f"cache lengths shape {jnp.shape(cache['lengths'])} does not match the batch size "
                         f"{tokens.shape[0]} of tokens")
    kv = [layer["k"] for layer in cache["layers"].values() if "k" in layer]
    capacity = jnp.shape(kv[0])[1] if kv else None
    if capacity is not None and tokens.shape[1] > capacity:
        raise ValueError(f"{tokens.shape[1]} tokens do not fit a cache of {capacity} slots")


def forward(params, cfg: ModelConfig, tokens, *, positions=None, segment_ids=None, cache=None):
    """See the module docstring."""
    return _run(params, cfg, tokens, positions, segment_ids, cache, with_head=True)


def hidden_states(params, cfg: ModelConfig, tokens, *, positions=None, segment_ids=None, cache=None,
                  prefill=False):
    """The final-normed hidden states f32[B, T, D] (no LM head) and ``aux`` as in ``forward`` (with a
    ``cache``, ``aux["cache"]`` too).

    Used by heads on the policy backbone (the reward model's scalar head), by the chunked LM head of
    training, and by the sampler's prefill, which needs the logits of one position per row only.
    ``prefill=True`` promises that ``cache`` is empty (``init_cache``'s): attention then runs as
    self-attention of the new tokens (flash attention with ``kernel_impl != "xla"``, no [T, S] scores).
    """
    return _run(params, cfg, tokens, positions, segment_ids, cache, with_head=False, prefill=prefill)


def lm_head(params, cfg: ModelConfig) -> jax.Array:
    """The LM head as a ``[D, V]`` matrix in the compute dtype: ``lm_head``, or the embedding table transposed
    (``tie_embeddings``)."""
    head = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
    return head.astype(dtype_of(cfg.dtype))


def head_logits(params, cfg: ModelConfig, hidden: jax.Array) -> jax.Array:
    """f32[..., V] logits of ``hidden_states`` rows [..., D]: what ``forward`` returns at those positions."""
    return at_least_f32(hidden.astype(dtype_of(cfg.dtype)) @ lm_head(params, cfg))


def _run(params, cfg, tokens, positions, segment_ids, cache, *, with_head, prefill=False):
    tokens, positions, segment_ids = (None if a is None else jnp.asarray(a) for a in (tokens, positions, segment_ids))
    _check_inputs(tokens, segment_ids, positions, cache, cfg)
    if prefill and cache is None:
        raise ValueError("prefill=True needs the (empty) cache to fill")
    if segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)
    if positions is None:
        if cache is None:
            positions = segment_positions(segment_ids)
        else:
            positions = cache["lengths"][:, None] + jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]
    logits, stats, new_layers = Decoder(cfg, with_head=with_head, prefill=prefill).apply(
        {"params": params}, tokens, positions, segment_ids, cache)
    if stats:
        balance = jnp.mean(jnp.stack([s["balance_loss"] for s in stats]))
        z_loss = jnp.mean(jnp.stack([s["z_loss"] for s in stats]))
        load = jnp.stack([s["expert_load"] for s in stats])
    else:
        balance = z_loss = jnp.zeros((), jnp.float32)
        load = jnp.zeros((0, cfg.num_experts), jnp.float32)
    aux = {"moe_aux_loss": cfg.aux_loss_weight * balance, "router_z_loss": cfg.router_z_loss_weight * z_loss,
           "balance_loss": balance, "z_loss": z_loss, "expert_load": load}
    if cache is not None:
        aux["cache"] = {"lengths": cache["lengths"] + jnp.sum(segment_ids > 0, axis=1).astype(jnp.int32),
                        "layers": new_layers}
    return logits, aux


def init_cache(cfg: ModelConfig, batch_size: int, max_len: int, dtype=None):
    """An empty cache: ``{"lengths": int32[B], "layers": {layer_i: ...}}`` with ``{"k", "v": [B, S, K, Dh]}``
    for attention layers and ``{"conv": [B, K-1, C], "ssm": [B, H, P, N]}`` for Mamba-2 layers (their size
    does not grow with ``max_len``; see ``mamba.py``)."""
    if batch_size < 1 or max_len < 1:
        raise ValueError(f"init_cache needs batch_size >= 1 and max_len >= 1, got {batch_size} and {max_len}")
    if max_len > cfg.max_seq_len:
        raise ValueError(f"cache length {max_len} exceeds max_seq_len={cfg.max_seq_len}")
    dtype = dtype or dtype_of(cfg.dtype)
    shape = (batch_size, max_len, cfg.num_kv_heads, cfg.resolved_head_dim)
    layers = {}
    for i, kind in enumerate(cfg.layer_kinds):
        if "attention" in kind:
            layers[f"layer_{i}"] = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
        elif kind == "mamba":
            layers[f"layer_{i}"] = init_layer_cache(cfg, batch_size, dtype)
    return {"lengths": jnp.zeros((batch_size,), jnp.int32), "layers": layers}


def _cached_layer_names(cfg: ModelConfig) -> list[str]:
    """Layers that keep decoding state: attention (KV) and Mamba-2 (conv + SSM state)."""
    return [f"layer_{i}" for i, kind in enumerate(cfg.layer_kinds) if "attention" in kind or kind == "mamba"]


def update_router_bias(params, expert_load, rate: float):
    """Aux-loss-free balancing (DeepSeek-V3): ``bias += rate * sign(mean_load - load)`` per MoE layer.

    expert_load: f32[num_moe_layers, E] as returned in ``aux["expert_load"]`` (layer order).
    """
    names = sorted((k for k in params if k.startswith("layer_") and "moe" in params[k]),
                   key=lambda k: int(k.split("_")[1]))
    if jnp.shape(expert_load)[:1] != (len(names),):
        raise ValueError(f"expert_load must be [num_moe_layers={len(names)}, E], got shape {jnp.shape(expert_load)}")
    new = dict(params)
    for row, name in enumerate(names):
        load = expert_load[row]
        bias = params[name]["moe"]["router_bias"]
        delta = rate * jnp.sign(jnp.mean(load) - load)
        new[name] = {**params[name], "moe": {**params[name]["moe"], "router_bias": bias + delta.astype(bias.dtype)}}
    return new


def trainable_mask(params, cfg: ModelConfig, *, freeze_router: bool = False):
    """Params-shaped bools: False for router biases (never trained) and router weights when frozen."""
    del cfg
    def trainable(path, _):
        names = [str(getattr(p, "key", p)) for p in path]
        if names[-1] == "router_bias":
            return False
        return not (freeze_router and names[-1] == "router")
    return jax.tree_util.tree_map_with_path(trainable, params)
