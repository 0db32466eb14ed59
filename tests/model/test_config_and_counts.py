"""Config validation messages and parameter counts against hand-computed published sizes."""
import pytest

from nemocascade import model as m


@pytest.mark.parametrize("change, message", [
    (dict(num_heads=5), "num_heads=5 does not divide d_model=128"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok=9 exceeds num_experts=4"),
    (dict(num_kv_heads=3), "num_kv_heads=3 must divide num_heads=4"),
    (dict(block_pattern=("mamba",)), "unknown block kind"),
    (dict(moe_activation="gelu"), "moe_activation='gelu' is not one of"),
    (dict(block_pattern=("attention+moe", "attention+mlp", "attention+moe")), "does not divide num_layers=4"),
])
def test_inconsistent_config_is_rejected_with_a_clear_message(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        m.presets.tiny().replace(**change)


def test_unknown_field_is_rejected_listing_valid_ones():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['n_layers'\]; valid fields"):
        m.ModelConfig.from_dict({"n_layers": 3})
    with pytest.raises(ValueError, match="unknown field"):
        m.presets.tiny().replace(hidden=3)


def test_nano30b_counts_match_the_published_layer_sizes():
    """Hand count from the Nemotron-3-Nano-30B-A3B config (hidden 2688, vocab 131072, 32/2 heads x 128,
    128 experts of width 1856 top-6 non-gated, shared MLP 3712, untied embeddings). Mamba-2 layers are not
    modelled, so the total is the published 31.6B minus the 23 Mamba-2 layers (~0.9B)."""
    cfg = m.presets.nano30b()
    d, v = 2688, 131072
    attention = d * 32 * 128 * 2 + d * 2 * 128 * 2 + d            # q, o, k, v, pre-norm
    expert = 2 * d * 1856                                          # up + down (squared ReLU, no gate)
    moe = d * 128 + 128 * expert + 2 * d * 3712 + d                # router, experts, shared MLP, pre-norm
    embeddings = 2 * v * d + d                                      # embed, lm_head, final norm
    total = 6 * attention + 23 * moe + embeddings
    active = total - 23 * (128 - 6) * expert
    counts = m.param_count(cfg)
    assert counts == {"total": total, "active": active}
    assert 30.6e9 < counts["total"] < 31.6e9           # published 31.6B includes ~0.9B of Mamba-2
    assert cfg.layer_kinds.count("moe") == 23 and cfg.layer_kinds.count("attention") == 6


def test_flops_per_token_formula():
    cfg = m.presets.tiny()
    counts = m.param_count(cfg)
    matmul_active = counts["active"] - cfg.vocab_size * cfg.d_model - 4 * 2 * cfg.d_model - cfg.d_model
    expected = 6 * matmul_active + 6 * 4 * 256 * cfg.num_heads * cfg.resolved_head_dim
    assert m.flops_per_token(cfg, 256) == pytest.approx(expected, rel=1e-9)
