"""Named model configs: ``tiny`` (CPU toy runs), ``tiny_hybrid`` (the same with Nemotron-H's Mamba-2 /
attention / MoE single-mixer layers), ``small_100m`` (benchmarks), ``nano30b`` (the real shape)."""
from __future__ import annotations

from nemocascade.model.config import ModelConfig

NAMES = ("tiny", "tiny_hybrid", "small_100m", "nano30b")

# Nemotron-3-Nano-30B-A3B layer pattern (config.json `hybrid_override_pattern` / `layers_block_type`):
# M = Mamba-2, E = MoE, * = attention. Source: the NVIDIA-Nemotron-3-Nano-30B-A3B model card and
# config.json on Hugging Face (summarised in RECIPE.md).
NANO_PATTERN = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"
_NANO_KINDS = {"M": "mamba", "E": "moe", "*": "attention"}


def tiny() -> ModelConfig:
    """~1.4M parameters (4 experts: XLA's CPU ragged_dot costs grow with the expert count): learns the
    toy domains in a few CPU minutes."""
    return ModelConfig(vocab_size=1024, d_model=128, num_layers=4, block_pattern=("attention+moe",), num_heads=4,
                       num_kv_heads=2, num_experts=4, num_experts_per_tok=2, num_shared_experts=1,
                       expert_hidden_size=128, max_seq_len=512, router_score="softmax")


def tiny_hybrid() -> ModelConfig:
    """A 4-layer Nemotron-H-style hybrid (Mamba-2, attention without RoPE, Mamba-2, MoE; sigmoid router,
    squared-ReLU experts), ~0.64M parameters, SSD chunks of 32 tokens: the cascade on a hybrid on CPU."""
    return ModelConfig(vocab_size=1024, d_model=128, num_layers=4, block_pattern=("mamba", "attention", "mamba", "moe"),
                       num_heads=4, num_kv_heads=2, use_rope=False, num_experts=4, num_experts_per_tok=2,
                       num_shared_experts=1, expert_hidden_size=128, moe_activation="squared_relu",
                       router_score="sigmoid", max_seq_len=512, mamba_num_heads=4, mamba_head_dim=48,
                       mamba_state_size=16, mamba_n_groups=2, mamba_conv_kernel=4, mamba_chunk_size=32)


def small_100m() -> ModelConfig:
    """~120M total / ~54M active parameters MoE (16 experts, top-2) for throughput benchmarks."""
    return ModelConfig(vocab_size=32768, d_model=512, num_layers=8, num_heads=8, num_kv_heads=4, num_experts=16,
                       num_experts_per_tok=2, num_shared_experts=1, expert_hidden_size=384, max_seq_len=4096)


def nano30b() -> ModelConfig:
    """Nemotron-3-Nano-30B-A3B: 52 layers in the published pattern (23 Mamba-2, 23 MoE, 6 attention), hidden
    2688, vocab 131072, untied; attention 32 heads / 2 KV heads / head dim 128 without positional encoding;
    Mamba-2 64 heads x 64, state 128, 8 groups, conv 4, chunk 128; 128 routed experts, top-6, width 1856,
    squared-ReLU, sigmoid router + correction bias, normalised top-k, scaling 2.5, one shared MLP of 3712.

    Sources: the NVIDIA-Nemotron-3-Nano-30B-A3B-BF16 model card and config.json on Hugging Face and the
    Nemotron 3 Nano tech report (arXiv:2512.20848): 31.6B total, 3.2B active (3.6B with embeddings);
    ``param_count`` gives these (``tests/model/test_config_and_counts.py``).
    """
    kinds = tuple(_NANO_KINDS[c] for c in NANO_PATTERN)
    return ModelConfig(vocab_size=131072, d_model=2688, num_layers=len(kinds), block_pattern=kinds, num_heads=32,
                       num_kv_heads=2, head_dim=128, use_rope=False, rms_norm_eps=1e-5, tie_embeddings=False,
                       dtype="bfloat16", param_dtype="float32", max_seq_len=262144, num_experts=128,
                       num_experts_per_tok=6, num_shared_experts=1, expert_hidden_size=1856,
                       shared_expert_hidden_size=3712, moe_activation="squared_relu", router_score="sigmoid",
                       norm_topk_prob=True, routed_scaling_factor=2.5, router_bias_update_rate=1e-3,
                       aux_loss_weight=0.0, router_z_loss_weight=0.0, mamba_num_heads=64, mamba_head_dim=64,
                       mamba_state_size=128, mamba_n_groups=8, mamba_conv_kernel=4, mamba_chunk_size=128)
