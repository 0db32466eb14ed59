"""Config validation messages and parameter counts against hand-computed published sizes."""
import dataclasses

import pytest

from nemocascade import model as m


@pytest.mark.parametrize("change, message", [
    (dict(num_heads=5), "num_heads=5 does not divide d_model=128"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok=9 exceeds num_experts=4"),
    (dict(num_kv_heads=3), "num_kv_heads=3 must divide num_heads=4"),
    (dict(block_pattern=("mamba+moe",)), "unknown block kind"),
    (dict(mamba_num_heads=6, mamba_n_groups=4), "mamba_n_groups=4 must divide mamba_num_heads=6"),
    (dict(moe_activation="gelu"), "moe_activation='gelu' is not one of"),
    (dict(block_pattern=("attention+moe", "attention+mlp", "attention+moe")), "does not divide num_layers=4"),
])
def test_inconsistent_config_is_rejected_with_a_clear_message(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        m.presets.tiny().replace(**change)


@pytest.mark.parametrize("change, message", [
    (dict(num_layers="4"), "num_layers must be an int, got '4'"),
    (dict(use_rope=1), "use_rope must be a bool"),
    (dict(block_pattern="attention+moe"), "block_pattern must be a sequence of block kinds"),
    (dict(rope_theta=None), "rope_theta must be a number"),
])
def test_wrong_field_types_are_type_errors(change, message):
    with pytest.raises(TypeError, match=message):
        m.presets.tiny().replace(**change)


@pytest.mark.parametrize("change, message", [
    (dict(head_dim=31), "rotary embeddings need an even head dim, got 31"),
    (dict(router_bias_update_rate=1e-3), "needs router_score='sigmoid'"),
    (dict(num_shared_experts=0, shared_expert_hidden_size=64), "num_shared_experts=0"),
    (dict(aux_loss_weight=-1.0), "aux_loss_weight must be >= 0"),
    (dict(kernel_impl="cuda"), "kernel_impl='cuda' is not one of"),
])
def test_more_inconsistent_values_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        m.presets.tiny().replace(**change)


def test_from_dict_round_trips_and_accepts_lists():
    cfg = m.presets.nano30b()
    values = dataclasses.asdict(cfg)
    values["block_pattern"] = list(values["block_pattern"])
    assert m.ModelConfig.from_dict(values) == cfg


def test_unknown_field_is_rejected_listing_valid_ones():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['n_layers'\]; valid fields"):
        m.ModelConfig.from_dict({"n_layers": 3})
    with pytest.raises(ValueError, match="unknown field"):
        m.presets.tiny().replace(hidden=3)


def test_nano30b_counts_match_the_published_layer_sizes_and_totals():
    """Hand count from the Nemotron-3-Nano-30B-A3B config.json (hidden 2688, vocab 131072, untied; attention
    32/2 heads x 128; Mamba-2 mamba_num_heads 64 x head dim 64, ssm_state_size 128, n_groups 8, conv_kernel 4
    with conv bias, gated RMSNorm, in_proj -> [z, x, B, C, dt], no projection biases; 128 experts of width
    1856 top-6 non-gated, shared MLP 3712), in the published 52-layer pattern. Published (Nemotron 3 Nano
    tech report, arXiv:2512.20848; HF model card): 31.6B total, 3.2B active (3.6B with embeddings)."""
    cfg = m.presets.nano30b()
    d, v = 2688, 131072
    inner, groups, state, heads = 64 * 64, 8, 128, 64
    conv_channels = inner + 2 * groups * state
    mamba = (d * (2 * inner + 2 * groups * state + heads)   # in_proj
             + conv_channels * 4 + conv_channels             # depthwise conv1d weight + bias
             + 3 * heads                                      # dt_bias, A_log, D
             + inner                                          # gated RMSNorm
             + inner * d                                      # out_proj
             + d)                                             # the layer's pre-norm
    attention = d * 32 * 128 * 2 + d * 2 * 128 * 2 + d            # q, o, k, v, pre-norm
    expert = 2 * d * 1856                                          # up + down (squared ReLU, no gate)
    moe = d * 128 + 128 * expert + 2 * d * 3712 + d                # router, experts, shared MLP, pre-norm
    embeddings = 2 * v * d + d                                      # embed, lm_head, final norm
    total = 23 * mamba + 6 * attention + 23 * moe + embeddings
    active = total - 23 * (128 - 6) * expert
    assert m.param_count(cfg) == {"total": total, "active": active}
    assert "".join({"mamba": "M", "moe": "E", "attention": "*"}[k] for k in cfg.layer_kinds) == \
        "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"
    assert round(total / 1e9, 1) == 31.6
    assert round(active / 1e9, 1) == 3.6                       # with the input embedding and LM head
    assert round((active - v * d) / 1e9, 1) == 3.2             # without the input embedding


def test_flops_per_token_formula():
    cfg = m.presets.tiny()
    counts = m.param_count(cfg)
    matmul_active = counts["active"] - cfg.vocab_size * cfg.d_model - 4 * 2 * cfg.d_model - cfg.d_model
    expected = 6 * matmul_active + 6 * 4 * 256 * cfg.num_heads * cfg.resolved_head_dim
    assert m.flops_per_token(cfg, 256) == pytest.approx(expected, rel=1e-9)
