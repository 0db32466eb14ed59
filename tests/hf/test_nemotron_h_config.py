"""Nemotron-H config.json <-> ModelConfig without torch: the published layout, aliases, refusals, round trip."""
import dataclasses
import math

import pytest

from nemocascade.hf import mapping, nemotron_h
from nemocascade.model import presets

# The NVIDIA-Nemotron-3-Nano-30B-A3B config.json's architecture keys (older spellings: hybrid_override_pattern,
# mamba_n_groups / mamba_d_conv aliases), with a few bookkeeping keys; independent of presets.nano30b's code.
PUBLISHED_STYLE = {
    "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "vocab_size": 131072,
    "hidden_size": 2688, "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
    "num_hidden_layers": 52, "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 128,
    "max_position_embeddings": 262144, "intermediate_size": 1856, "mlp_hidden_act": "relu2", "mamba_num_heads": 64,
    "mamba_head_dim": 64, "ssm_state_size": 128, "mamba_n_groups": 8, "mamba_d_conv": 4, "chunk_size": 128,
    "expand": 2, "mamba_hidden_act": "silu", "time_step_limit": [0.0, math.inf], "use_conv_bias": True,
    "mamba_proj_bias": False, "use_bias": False, "mlp_bias": False, "attention_bias": False, "n_routed_experts": 128,
    "num_experts_per_tok": 6, "moe_intermediate_size": 1856, "moe_shared_expert_intermediate_size": 3712,
    "n_shared_experts": 1, "routed_scaling_factor": 2.5, "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
    "layer_norm_epsilon": 1e-5, "tie_word_embeddings": False, "residual_in_fp32": False, "bos_token_id": 1,
    "eos_token_id": 2, "torch_dtype": "bfloat16", "use_mamba_kernels": True, "rescale_prenorm_residual": True,
}


def test_published_config_is_the_nano30b_preset():
    cfg = nemotron_h.config_from_hf(PUBLISHED_STYLE, dtype="bfloat16")
    # The preset also turns on aux-loss-free bias updates for training (config.json has no such key), and leaves
    # the dense-MLP fields at their defaults (the pattern has no dense layer).
    assert cfg.replace(router_bias_update_rate=1e-3, mlp_hidden_size=256, mlp_activation="swiglu") == presets.nano30b()


def test_round_trip_keeps_the_pattern_spelling():
    cfg = nemotron_h.config_from_hf(PUBLISHED_STYLE)
    out = nemotron_h.config_to_hf(cfg, PUBLISHED_STYLE, "bfloat16")
    assert out["hybrid_override_pattern"] == PUBLISHED_STYLE["hybrid_override_pattern"]
    assert "layers_block_type" not in out and "mamba_n_groups" not in out and out["n_groups"] == 8
    assert out["eos_token_id"] == 2 and out["dtype"] == "bfloat16" and "torch_dtype" not in out
    assert nemotron_h.config_from_hf(out) == cfg
    fresh = nemotron_h.config_to_hf(cfg, None, "float32")
    assert fresh["layers_block_type"][:6] == ["linear_attention", "moe"] * 2 + ["linear_attention", "full_attention"]
    assert nemotron_h.config_from_hf(fresh) == cfg


def test_transformers_infinity_spelling_and_layer_list():
    hf = {**PUBLISHED_STYLE, "time_step_limit": [0.0, {"__float__": "Infinity"}], "num_hidden_layers": 3,
          "layers_block_type": ["mamba", "full_attention", "mlp"], "hybrid_override_pattern": "M*-"}
    assert nemotron_h.config_from_hf(hf).layer_kinds == ("mamba", "attention", "mlp")


@pytest.mark.parametrize("change, message", [
    ({"moe_latent_size": 1024}, "moe_latent_size=1024 is not supported"),
    ({"topk_group": 1, "n_group": 8}, "group-restricted routing"),
    ({"mlp_hidden_act": "silu"}, "mlp_hidden_act='silu' is not supported"),
    ({"time_step_limit": [0.0, 10.0]}, r"time_step_limit=\[0.0, 10.0\] is not supported"),
    ({"tie_word_embeddings": True}, "tie_word_embeddings=True is not supported"),
    ({"num_nextn_predict_layers": 1}, "num_nextn_predict_layers=1"),
    ({"use_conv_bias": False}, "use_conv_bias=False"),
    ({"some_new_switch": 1}, r"unsupported key\(s\) \['some_new_switch'\]"),
    ({"quantization_config": {"quant_method": "fp8"}}, "quantization_config is set"),
    ({"hybrid_override_pattern": "M*X"}, r"has characters \['X'\]"),
    ({"num_hidden_layers": 4}, "num_hidden_layers=4 but layers_block_type has 52"),
    ({"layers_block_type": ["moe"] * 52}, "disagree"),
    ({"hybrid_override_pattern": None}, "needs layers_block_type"),
    ({"layers_block_type": ["indexed_attention"], "hybrid_override_pattern": None, "num_hidden_layers": 1},
     r"unsupported layer type\(s\) \['indexed_attention'\]"),
    ({"moe_shared_expert_intermediate_size": 0}, "always has a shared expert"),
    ({"architectures": ["Qwen3MoeForCausalLM"]}, r"expected \['NemotronHForCausalLM'\]"),
])
def test_unsupported_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        nemotron_h.config_from_hf({**PUBLISHED_STYLE, **change})


def test_unwritable_model_configs_are_refused():
    with pytest.raises(ValueError, match="ModelConfig.use_rope=True cannot be written as Nemotron-H"):
        nemotron_h.config_to_hf(presets.tiny_hybrid().replace(use_rope=True), None, "float32")
    with pytest.raises(ValueError, match=r"layer kinds \['attention\+moe'\] cannot be written"):
        nemotron_h.config_to_hf(presets.tiny().replace(use_rope=False, mlp_activation="squared_relu",
                                                       moe_activation="squared_relu", router_score="sigmoid"),
                                None, "float32")


def test_in_proj_row_blocks_must_tile():
    cfg = presets.tiny_hybrid()
    rules = nemotron_h.rules(cfg)
    shapes = mapping.param_shapes(cfg)
    mapping.check_rules_cover(rules, shapes, "nemotron_h")
    start, stop, total = next(r.hf_rows for r in rules if r.ours.endswith("w_b"))
    broken = [dataclasses.replace(r, hf_rows=(0, stop - start, total)) if r.ours.endswith("w_b") else r
              for r in rules]
    with pytest.raises(ValueError, match="do not tile its rows"):
        mapping.check_rules_cover(broken, shapes, "nemotron_h")
