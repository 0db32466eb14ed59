"""Parameter counts and FLOPs per token (for MFU)."""
from __future__ import annotations

import math

import jax

from nemocascade.model.config import ModelConfig
from nemocascade.model.transformer import abstract_params


def _sizes(cfg: ModelConfig) -> dict[str, int]:
    shapes, _ = abstract_params(cfg)
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


# Per-channel / per-head Mamba-2 params that multiply no activations in a matmul.
_MAMBA_ELEMENTWISE = ("conv_weight", "conv_bias", "dt_bias", "A_log", "/D")


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: ``6 * matmul params active per token`` (forward 2, backward 4; the
    embedding lookup, norms and Mamba-2's conv / per-head scalars excluded, the LM head included)
    ``+ 6 * attention layers * seq_len * heads * head_dim`` (causal QK^T and AV: half of the 12*L*H*Dh*T
    of full attention) ``+ 6 * Mamba-2 layers * (L * (G*N + H*P) + 2 * H*P*N)`` with ``L =
    min(chunk, seq_len)``: the chunked SSD's multiply-adds per token (C.B scores and the intra-chunk
    product over full L x L chunks, each chunk's state and the incoming state's read-out)."""
    matmul = 0
    for name, size in _sizes(cfg).items():
        if name.endswith(("router_bias", "scale") + _MAMBA_ELEMENTWISE) or name == "embed":
            continue
        routed = "/moe/w_" in name
        matmul += size * cfg.num_experts_per_tok / cfg.num_experts if routed else size
    if cfg.tie_embeddings:
        matmul += cfg.vocab_size * cfg.d_model
    attention_layers = sum("attention" in kind for kind in cfg.layer_kinds)
    mamba_layers = cfg.layer_kinds.count("mamba")
    chunk = min(cfg.mamba_chunk_size, seq_len)
    inner = cfg.mamba_num_heads * cfg.mamba_head_dim
    ssd = chunk * (cfg.mamba_n_groups * cfg.mamba_state_size + inner) + 2 * inner * cfg.mamba_state_size
    return (6.0 * matmul + 6.0 * attention_layers * seq_len * cfg.num_heads * cfg.resolved_head_dim
            + 6.0 * mamba_layers * ssd)
