"""Qwen3-MoE config.json <-> ModelConfig: the translation, and refusals that name the key."""
import copy

import pytest

from nemocascade.hf import qwen3_moe
from nemocascade.model import presets

# The keys of a published Qwen3-30B-A3B-style config.json (transformers 4.x layout: num_experts, rope_theta).
PUBLISHED_STYLE = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}


def test_published_style_config():
    cfg = qwen3_moe.config_from_hf(PUBLISHED_STYLE, param_dtype="bfloat16")
    assert (cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim) == \
        (151936, 2048, 48, 32, 4, 128)
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.expert_hidden_size, cfg.num_shared_experts) == \
        (128, 8, 768, 0)
    assert cfg.block_pattern == ("attention+moe",) and cfg.qk_norm and cfg.norm_topk_prob
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.max_seq_len, cfg.param_dtype) == (1e6, 1e-6, 40960, "bfloat16")
    assert cfg.router_score == "softmax" and cfg.routed_scaling_factor == 1.0 and not cfg.tie_embeddings


def test_round_trip_keeps_the_base_spelling():
    cfg = qwen3_moe.config_from_hf(PUBLISHED_STYLE)
    out = qwen3_moe.config_to_hf(cfg, PUBLISHED_STYLE, "bfloat16")
    want = dict(PUBLISHED_STYLE, dtype="bfloat16")
    del want["torch_dtype"]
    assert out == want
    assert qwen3_moe.config_from_hf(out) == cfg


def test_transformers5_spelling_and_dense_layers():
    hf = copy.deepcopy(PUBLISHED_STYLE)
    del hf["rope_theta"], hf["rope_scaling"], hf["num_experts"]
    hf.update(rope_parameters={"rope_type": "default", "rope_theta": 5000.0}, num_local_experts=8,
              num_hidden_layers=4, mlp_only_layers=[1])
    cfg = qwen3_moe.config_from_hf(hf)
    assert cfg.rope_theta == 5000.0 and cfg.num_experts == 8
    assert cfg.layer_kinds == ("attention+moe", "attention+mlp", "attention+moe", "attention+moe")
    assert qwen3_moe.config_from_hf(dict(hf, mlp_only_layers=[], decoder_sparse_step=2)).block_pattern == \
        ("attention+mlp", "attention+moe")
    out = qwen3_moe.config_to_hf(cfg, hf, "float32")
    assert out["num_local_experts"] == 8 and "num_experts" not in out and out["mlp_only_layers"] == [1]
    assert out["rope_parameters"] == {"rope_type": "default", "rope_theta": 5000.0}


@pytest.mark.parametrize("change, message", [
    ({"use_sliding_window": True}, "use_sliding_window=True is not supported"),
    ({"attention_bias": True}, "attention_bias=True is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling=.*only unscaled RoPE"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}}, "rope_type='yarn'"),
    ({"quantization_config": {"quant_method": "fp8"}}, "quantization_config is set"),
    ({"some_new_switch": 1}, r"unsupported key\(s\) \['some_new_switch'\]"),
    ({"num_experts": 0}, "num_experts=0"),
    ({"decoder_sparse_step": 0}, "decoder_sparse_step must be >= 1"),
    ({"architectures": ["LlamaForCausalLM"]}, "expected \\['Qwen3MoeForCausalLM'\\]"),
])
def test_unsupported_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        qwen3_moe.config_from_hf({**PUBLISHED_STYLE, **change})


def test_architectural_overrides_are_refused():
    with pytest.raises(ValueError, match=r"cannot override \['d_model'\]"):
        qwen3_moe.config_from_hf(PUBLISHED_STYLE, d_model=64)


def test_configs_qwen3_moe_cannot_express_are_refused():
    with pytest.raises(ValueError, match="ModelConfig.qk_norm=False cannot be written as Qwen3-MoE"):
        qwen3_moe.config_to_hf(presets.tiny(), None, "float32")
    cfg = qwen3_moe.config_from_hf(PUBLISHED_STYLE)
    with pytest.raises(ValueError, match=r"layer kinds \['attention', 'moe'\] cannot be written"):
        qwen3_moe.config_to_hf(cfg.replace(block_pattern=("attention", "moe"), num_layers=2), None, "float32")
