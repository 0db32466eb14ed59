"""Qwen3-MoE (``Qwen3MoeForCausalLM``): config.json <-> ``ModelConfig`` and the tensor table.

The architecture (transformers' ``modeling_qwen3_moe.py``): pre-norm decoder layers; attention with
per-head RMSNorm of q and k before RoPE (rotate-half layout, ``rope_theta``), no biases; then a sparse MoE
block (softmax router over ``num_experts``, top ``num_experts_per_tok``, renormalised when
``norm_topk_prob``, SiLU-gated experts of width ``moe_intermediate_size``, no shared expert) or, for
layers in ``mlp_only_layers`` or off the ``decoder_sparse_step`` grid, a dense SiLU-gated MLP of width
``intermediate_size``. Our model has all of it (``qk_norm=True``, ``num_shared_experts=0``).

On disk the experts are per-expert tensors ``model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj.weight``
(published checkpoints, and transformers 5's ``save_pretrained``).
"""
from __future__ import annotations

from typing import Any, Mapping

from nemocascade.hf.mapping import (COPY, LINEAR, LINEAR_FROM_HEADS, Family, Rule, check_fixed_values,
                                    check_hf_keys, check_writable, table_rules)
from nemocascade.model.config import ModelConfig

ARCHITECTURE = "Qwen3MoeForCausalLM"

# config.json keys read below (sliding_window / max_window_layers only matter with use_sliding_window, which
# is refused); any other key that is not bookkeeping (``mapping.BOOKKEEPING_KEYS``) is refused.
_READ_KEYS = {
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
    "rms_norm_eps", "tie_word_embeddings", "rope_theta", "rope_scaling", "rope_parameters", "attention_bias",
    "use_sliding_window", "sliding_window", "max_window_layers", "decoder_sparse_step", "mlp_only_layers",
    "moe_intermediate_size", "num_experts_per_tok", "num_experts", "num_local_experts", "norm_topk_prob",
    "router_aux_loss_coef",
}

_ATTENTION = (
    Rule("layer_{i}/attention_norm/scale", "model.layers.{i}.input_layernorm.weight", COPY),
    Rule("layer_{i}/attention/wq", "model.layers.{i}.self_attn.q_proj.weight", LINEAR),
    Rule("layer_{i}/attention/wk", "model.layers.{i}.self_attn.k_proj.weight", LINEAR),
    Rule("layer_{i}/attention/wv", "model.layers.{i}.self_attn.v_proj.weight", LINEAR),
    Rule("layer_{i}/attention/wo", "model.layers.{i}.self_attn.o_proj.weight", LINEAR_FROM_HEADS),
    Rule("layer_{i}/attention/q_norm/scale", "model.layers.{i}.self_attn.q_norm.weight", COPY),
    Rule("layer_{i}/attention/k_norm/scale", "model.layers.{i}.self_attn.k_norm.weight", COPY),
)
_MOE = (
    Rule("layer_{i}/moe_norm/scale", "model.layers.{i}.post_attention_layernorm.weight", COPY),
    Rule("layer_{i}/moe/router", "model.layers.{i}.mlp.gate.weight", LINEAR),
    Rule("layer_{i}/moe/router_bias", None),      # our sigmoid-router correction bias; unused (zero) here
    Rule("layer_{i}/moe/w_gate", "model.layers.{i}.mlp.experts.{e}.gate_proj.weight", LINEAR, per_expert=True),
    Rule("layer_{i}/moe/w_up", "model.layers.{i}.mlp.experts.{e}.up_proj.weight", LINEAR, per_expert=True),
    Rule("layer_{i}/moe/w_down", "model.layers.{i}.mlp.experts.{e}.down_proj.weight", LINEAR, per_expert=True),
)
_MLP = (
    Rule("layer_{i}/mlp_norm/scale", "model.layers.{i}.post_attention_layernorm.weight", COPY),
    Rule("layer_{i}/mlp/w_gate", "model.layers.{i}.mlp.gate_proj.weight", LINEAR),
    Rule("layer_{i}/mlp/w_up", "model.layers.{i}.mlp.up_proj.weight", LINEAR),
    Rule("layer_{i}/mlp/w_down", "model.layers.{i}.mlp.down_proj.weight", LINEAR),
)
_PARTS = {"attention": _ATTENTION, "moe": _MOE, "mlp": _MLP}
_EMBED = (Rule("embed", "model.embed_tokens.weight", COPY), Rule("final_norm/scale", "model.norm.weight", COPY))
_UNTIED_HEAD = Rule("lm_head", "lm_head.weight", LINEAR)
_TIED_HEAD = Rule(None, "lm_head.weight")     # a tied checkpoint may still carry the head; it is not read


def rules(cfg: ModelConfig) -> list[Rule]:
    return table_rules(cfg, _EMBED + (_TIED_HEAD if cfg.tie_embeddings else _UNTIED_HEAD,), _PARTS)


def _fail(msg: str):
    raise ValueError(f"Qwen3-MoE config.json: {msg}")


def _rope_theta(hf: Mapping[str, Any]) -> float:
    """rope_theta from transformers 5's ``rope_parameters`` or the older top-level keys; only plain RoPE."""
    params = hf.get("rope_parameters")
    if params is not None:
        if params.get("rope_type", "default") != "default":
            _fail(f"rope_parameters.rope_type={params.get('rope_type')!r}: only 'default' (unscaled) RoPE is "
                  f"supported")
        return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if hf.get("rope_scaling") is not None:
        _fail(f"rope_scaling={hf['rope_scaling']!r}: only unscaled RoPE is supported")
    return float(hf.get("rope_theta", 10000.0))


def layer_kinds(hf: Mapping[str, Any]) -> tuple[str, ...]:
    """Per layer: ``attention+moe`` or (``mlp_only_layers`` / off the ``decoder_sparse_step`` grid)
    ``attention+mlp``, as transformers decides it."""
    step = int(hf.get("decoder_sparse_step", 1))
    if step < 1:
        _fail(f"decoder_sparse_step must be >= 1, got {step}")
    dense = set(hf.get("mlp_only_layers") or ())
    return tuple("attention+mlp" if i in dense or (i + 1) % step else "attention+moe"
                 for i in range(int(hf["num_hidden_layers"])))


def _shortest_period(kinds: tuple[str, ...]) -> tuple[str, ...]:
    for p in range(1, len(kinds) + 1):
        if len(kinds) % p == 0 and kinds == kinds[:p] * (len(kinds) // p):
            return kinds[:p]
    raise AssertionError("unreachable: the whole tuple is a period")


def config_from_hf(hf: Mapping[str, Any], **overrides) -> ModelConfig:
    """Our ``ModelConfig`` from a Qwen3-MoE config.json dict; ``overrides`` may set ``RUNTIME_FIELDS``."""
    if ARCHITECTURE not in (hf.get("architectures") or [ARCHITECTURE]) or hf.get("model_type", "qwen3_moe") != \
            "qwen3_moe":
        _fail(f"architectures={hf.get('architectures')} model_type={hf.get('model_type')!r}, expected "
              f"[{ARCHITECTURE!r}] and 'qwen3_moe'")
    check_hf_keys(hf, overrides, _READ_KEYS, _fail)
    check_fixed_values(hf, (("hidden_act", "silu"), ("attention_bias", False), ("use_sliding_window", False)), _fail)
    num_experts = hf.get("num_experts", hf.get("num_local_experts"))
    if not num_experts:
        _fail(f"num_experts={num_experts!r}: a Qwen3-MoE model needs experts (a dense Qwen3 is another family)")
    kinds = layer_kinds(hf)
    values = dict(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=len(kinds),
        block_pattern=_shortest_period(kinds), num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]), head_dim=hf.get("head_dim"),
        use_rope=True, rope_theta=_rope_theta(hf), qk_norm=True, rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_seq_len=hf.get("max_position_embeddings", 32768), mlp_hidden_size=hf.get("intermediate_size", 6144),
        mlp_activation="swiglu", num_experts=num_experts, num_experts_per_tok=hf["num_experts_per_tok"],
        num_shared_experts=0, expert_hidden_size=hf["moe_intermediate_size"], moe_activation="swiglu",
        router_score="softmax", norm_topk_prob=bool(hf.get("norm_topk_prob", False)), routed_scaling_factor=1.0,
        router_bias_update_rate=0.0, aux_loss_weight=float(hf.get("router_aux_loss_coef", 0.001)),
        router_z_loss_weight=0.0)
    values.update(overrides)
    return ModelConfig(**values)


# (our field, the value Qwen3-MoE has) for every switch the format fixes.
_FIXED = (("use_rope", True), ("qk_norm", True), ("mlp_activation", "swiglu"), ("moe_activation", "swiglu"),
          ("router_score", "softmax"), ("routed_scaling_factor", 1.0), ("resolved_shared_hidden", 0))


def config_to_hf(cfg: ModelConfig, base: Mapping[str, Any] | None, dtype: str) -> dict:
    """A Qwen3-MoE config.json dict for ``cfg`` (``dtype``: the tensors' dtype name, e.g. "bfloat16").

    ``base`` (the config.json this model was imported from, if any) keeps the keys we do not model
    (token ids, ...) and its spelling of the expert count and RoPE keys.
    """
    check_writable(cfg, _FIXED, "Qwen3-MoE")
    bad = sorted(set(cfg.layer_kinds) - {"attention+moe", "attention+mlp"})
    if bad:
        raise ValueError(f"ModelConfig layer kinds {bad} cannot be written as Qwen3-MoE (attention+moe / "
                         f"attention+mlp layers only)")
    out = dict(base or {})
    out.pop("torch_dtype", None)
    dense = [i for i, kind in enumerate(cfg.layer_kinds) if kind == "attention+mlp"]
    out.update(
        architectures=[ARCHITECTURE], model_type="qwen3_moe", vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
        intermediate_size=cfg.mlp_hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.resolved_head_dim, hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, use_sliding_window=False,
        decoder_sparse_step=1, mlp_only_layers=dense, moe_intermediate_size=cfg.expert_hidden_size,
        num_experts_per_tok=cfg.num_experts_per_tok, norm_topk_prob=cfg.norm_topk_prob,
        router_aux_loss_coef=cfg.aux_loss_weight, dtype=dtype)
    out["num_local_experts" if "num_local_experts" in out else "num_experts"] = cfg.num_experts
    if "rope_parameters" in out or "rope_theta" not in out:
        out.pop("rope_scaling", None)
        out["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    else:
        out.update(rope_theta=cfg.rope_theta, rope_scaling=None)
    return out


FAMILY = Family(name="qwen3_moe", architectures=(ARCHITECTURE,), config_from_hf=config_from_hf,
                config_to_hf=config_to_hf, rules=rules)
