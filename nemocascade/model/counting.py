"""Parameter counts and FLOPs per token (for MFU)."""
from __future__ import annotations

import math

import jax

from nemocascade.model.config import ModelConfig
from nemocascade.model.transformer import init_params


def _sizes(cfg: ModelConfig) -> dict[str, int]:
    shapes = jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))
    sizes = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
        sizes["/".join(str(getattr(p, "key", p)) for p in path)] = math.prod(leaf.shape)
    return sizes


def param_count(cfg: ModelConfig) -> dict[str, int]:
    """``{"total", "active"}``: all parameters (router biases excluded: they are not trained), and those
    used per token (routed experts count ``k`` of ``E``; embeddings and the LM head included)."""
    total = active = 0
    for name, size in _sizes(cfg).items():
        if name.endswith("router_bias"):
            continue
        total += size
        routed = "/moe/w_" in name
        active += size * cfg.num_experts_per_tok // cfg.num_experts if routed else size
    return {"total": total, "active": active}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: ``6 * matmul params active per token`` (forward 2, backward 4; the
    embedding lookup excluded, the LM head included) ``+ 6 * attention layers * seq_len * heads *
    head_dim`` (causal QK^T and AV: half of the 12*L*H*Dh*T of full attention)."""
    matmul = 0
    for name, size in _sizes(cfg).items():
        if name.endswith(("router_bias", "scale")) or name == "embed":
            continue
        routed = "/moe/w_" in name
        matmul += size * cfg.num_experts_per_tok / cfg.num_experts if routed else size
    if cfg.tie_embeddings:
        matmul += cfg.vocab_size * cfg.d_model
    attention_layers = sum("attention" in kind for kind in cfg.layer_kinds)
    return 6.0 * matmul + 6.0 * attention_layers * seq_len * cfg.num_heads * cfg.resolved_head_dim
