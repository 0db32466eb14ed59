"""Nemotron-H (``NemotronHForCausalLM``): config.json <-> ``ModelConfig`` and the tensor table.

The architecture (transformers' ``modeling_nemotron_h.py``): single-mixer blocks ``x + mixer(rms_norm(x))``,
the mixer per layer from ``layers_block_type`` (or the older ``hybrid_override_pattern`` string: ``M``
Mamba-2 = ``linear_attention``, ``*`` attention = ``full_attention``, ``E`` MoE, ``-`` dense MLP):

- Mamba-2: one ``in_proj`` ``[z, x, B, C, dt]`` (no bias), depthwise causal conv with bias over
  ``[x, B, C]``, ``softplus(dt + dt_bias)`` (``time_step_limit`` (0, inf): no clamp), ``A = -exp(A_log)``,
  ``D`` skip, gated RMSNorm (gate before normalising, ``n_groups`` groups), ``out_proj``;
- attention: GQA without positional encoding, no q/k norm, no biases;
- MoE: sigmoid router + ``e_score_correction_bias`` (selection only; our ``router_bias``), top-k,
  renormalised when ``norm_topk_prob``, times ``routed_scaling_factor``; non-gated squared-ReLU (``relu2``)
  experts and one always-on shared expert of ``moe_shared_expert_intermediate_size``;
- dense MLP: non-gated squared-ReLU.

Our model has all of it (``use_rope=False``, ``qk_norm=False``, ``mamba`` / ``attention`` / ``moe`` / ``mlp``
layer kinds, ``moe_activation=mlp_activation="squared_relu"``, ``router_score="sigmoid"``). What it lacks is
refused, naming the key: MoE latent projections (``moe_latent_size``), restricted group routing
(``topk_group < n_group``), multi-token-prediction layers, biases, other activations, a ``time_step_limit``
clamp, and ``tie_word_embeddings=true`` (transformers 5's ``NemotronHForCausalLM`` keeps ``lm_head``
separate even then, so the flag's meaning is ambiguous).

On disk (published checkpoints and transformers 5's ``save_pretrained``): ``backbone.*`` names, per-expert
``backbone.layers.{i}.mixer.experts.{e}.{up,down}_proj.weight``, ``conv1d.weight`` as ``[C, 1, K]``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from nemocascade.hf.mapping import (COPY, DEPTHWISE_CONV, FLAT, LINEAR, LINEAR_FROM_HEADS, Family, Layout, Rule,
                                    check_fixed_values, check_hf_keys, check_writable, table_rules)
from nemocascade.model.config import ModelConfig

ARCHITECTURE = "NemotronHForCausalLM"

# Our layer kind per transformers layer type (legacy spellings "mamba" / "attention" included) and per
# hybrid_override_pattern character.
_KINDS = {"linear_attention": "mamba", "mamba": "mamba", "full_attention": "attention", "attention": "attention",
          "moe": "moe", "mlp": "mlp"}
_PATTERN = {"M": "linear_attention", "*": "full_attention", "E": "moe", "-": "mlp"}
_LAYER_TYPES = {"mamba": "linear_attention", "attention": "full_attention", "moe": "moe", "mlp": "mlp"}
# Older config.json spellings that transformers renames on load (the old name wins when both are present).
_ALIASES = {"mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel", "mamba_expand": "expand",
            "mamba_dt_min": "time_step_min", "mamba_dt_max": "time_step_max", "mamba_dt_limit": "time_step_limit",
            "mamba_dt_init_floor": "time_step_floor", "mamba_conv_bias": "use_conv_bias",
            "mamba_chunk_size": "chunk_size"}
# transformers' NemotronHConfig defaults of the keys read below (a config.json may omit any of them).
_DEFAULTS = {
    "vocab_size": 131072, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 4096, "intermediate_size": 21504, "ssm_state_size": 128, "mamba_num_heads": 128,
    "mamba_head_dim": 64, "n_groups": 8, "conv_kernel": 4, "chunk_size": 128, "n_routed_experts": 8,
    "moe_intermediate_size": 7688, "moe_shared_expert_intermediate_size": 7688, "num_experts_per_tok": 2,
    "routed_scaling_factor": 1.0, "norm_topk_prob": True, "layer_norm_epsilon": 1e-5, "n_group": 1, "topk_group": 1,
}
# (key, the only value we model); a config.json may omit the key.
_FIXED_VALUES = (("mamba_hidden_act", "silu"), ("mlp_hidden_act", "relu2"), ("use_conv_bias", True),
                 ("mamba_proj_bias", False), ("use_bias", False), ("mlp_bias", False), ("attention_bias", False),
                 ("sliding_window", None), ("moe_latent_size", None), ("num_nextn_predict_layers", 0),
                 ("tie_word_embeddings", False))
# Keys read (via _DEFAULTS / _FIXED_VALUES or below), and keys that do not change the forward pass: init
# ranges (time_step_min/max/floor, rescale_prenorm_residual), kernel / cache / generation switches, `expand`
# (the Mamba width is mamba_num_heads * mamba_head_dim), keys the model never reads (n_shared_experts: one
# shared expert is always built; moe_shared_expert_overlap; residual_in_fp32), MTP layout with no MTP layers.
_READ_KEYS = set(_DEFAULTS) | {k for k, _ in _FIXED_VALUES} | {
    "architectures", "model_type", "layers_block_type", "hybrid_override_pattern", "num_hidden_layers",
    "time_step_limit", "expand", "time_step_min", "time_step_max", "time_step_floor", "rescale_prenorm_residual",
    "use_mamba_kernels", "mamba_ssm_cache_dtype", "num_logits_to_keep", "hidden_dropout", "n_shared_experts",
    "moe_shared_expert_overlap", "residual_in_fp32", "mtp_layers_block_type", "mtp_hybrid_override_pattern",
    "auto_map",
}


def _layer(name: str) -> str:
    return "backbone.layers.{i}." + name


def _mixer(part: str, tensors: Mapping[str, tuple[str, Layout]], *extra: Rule) -> tuple[Rule, ...]:
    """A single-mixer layer's rules: its pre-norm ``norm.weight``, then per ``{our name: (tensor under
    mixer., layout)}`` one rule (per expert where the tensor name has ``{e}``), then ``extra``."""
    return (Rule(f"layer_{{i}}/{part}_norm/scale", _layer("norm.weight")),) + tuple(
        Rule(f"layer_{{i}}/{part}/{ours}", _layer(f"mixer.{hf}"), layout, per_expert="{e}" in hf)
        for ours, (hf, layout) in tensors.items()) + extra


def _mamba_rules(cfg: ModelConfig) -> tuple[Rule, ...]:
    """``in_proj`` rows ``[z (H*P), x (H*P), B (G*N), C (G*N), dt (H)]`` split into our five projections."""
    hp = cfg.mamba_num_heads * cfg.mamba_head_dim
    gn = cfg.mamba_n_groups * cfg.mamba_state_size
    sizes = (("w_z", hp), ("w_x", hp), ("w_b", gn), ("w_c", gn), ("w_dt", cfg.mamba_num_heads))
    total = sum(size for _, size in sizes)
    starts = [sum(size for _, size in sizes[:j]) for j in range(len(sizes))]
    in_proj = (Rule(f"layer_{{i}}/mamba/{name}", _layer("mixer.in_proj.weight"), LINEAR,
                    hf_rows=(start, start + size, total)) for (name, size), start in zip(sizes, starts))
    return _mixer("mamba", {
        "conv_weight": ("conv1d.weight", DEPTHWISE_CONV), "conv_bias": ("conv1d.bias", COPY),
        "dt_bias": ("dt_bias", COPY), "A_log": ("A_log", COPY), "D": ("D", COPY), "norm_scale": ("norm.weight", FLAT),
        "w_out": ("out_proj.weight", LINEAR_FROM_HEADS)}, *in_proj)


_ATTENTION = _mixer("attention", {"wq": ("q_proj.weight", LINEAR), "wk": ("k_proj.weight", LINEAR),
                                  "wv": ("v_proj.weight", LINEAR), "wo": ("o_proj.weight", LINEAR_FROM_HEADS)})
_MOE = _mixer("moe", {
    "router": ("gate.weight", LINEAR), "router_bias": ("gate.e_score_correction_bias", COPY),
    "w_up": ("experts.{e}.up_proj.weight", LINEAR), "w_down": ("experts.{e}.down_proj.weight", LINEAR),
    "shared/w_up": ("shared_experts.up_proj.weight", LINEAR),
    "shared/w_down": ("shared_experts.down_proj.weight", LINEAR)})
_MLP = _mixer("mlp", {"w_up": ("up_proj.weight", LINEAR), "w_down": ("down_proj.weight", LINEAR)})
_TOP = (Rule("embed", "backbone.embeddings.weight"), Rule("final_norm/scale", "backbone.norm_f.weight"),
        Rule("lm_head", "lm_head.weight", LINEAR))


def rules(cfg: ModelConfig) -> list[Rule]:
    return table_rules(cfg, _TOP, {"mamba": _mamba_rules(cfg), "attention": _ATTENTION, "moe": _MOE, "mlp": _MLP})


def _fail(msg: str):
    raise ValueError(f"Nemotron-H config.json: {msg}")


def _as_float(value) -> float:
    """A number of config.json, also transformers' ``{"__float__": "Infinity"}`` spelling of non-finite ones."""
    if isinstance(value, Mapping) and "__float__" in value:
        return float(value["__float__"])
    return float(value)


def layer_kinds(hf: Mapping[str, Any]) -> tuple[str, ...]:
    """Our kind per layer from ``layers_block_type`` or ``hybrid_override_pattern`` (they must agree when
    both are given)."""
    types = hf.get("layers_block_type")
    pattern = hf.get("hybrid_override_pattern")
    if pattern is not None:
        bad = sorted(set(pattern) - set(_PATTERN))
        if bad:
            _fail(f"hybrid_override_pattern={pattern!r} has characters {bad}; known: {sorted(_PATTERN)}")
        from_pattern = [_PATTERN[c] for c in pattern]
        if types is not None and [_KINDS.get(t, t) for t in types] != [_KINDS[t] for t in from_pattern]:
            _fail(f"layers_block_type={types} and hybrid_override_pattern={pattern!r} disagree")
        types = types if types is not None else from_pattern
    if not types:
        _fail("needs layers_block_type (or hybrid_override_pattern): the mixer of each layer")
    bad = sorted(set(types) - set(_KINDS))
    if bad:
        _fail(f"layers_block_type has unsupported layer type(s) {bad}; supported: {sorted(_KINDS)}")
    if "num_hidden_layers" in hf and hf["num_hidden_layers"] != len(types):
        _fail(f"num_hidden_layers={hf['num_hidden_layers']} but layers_block_type has {len(types)} layers")
    return tuple(_KINDS[t] for t in types)


def config_from_hf(hf: Mapping[str, Any], **overrides) -> ModelConfig:
    """Our ``ModelConfig`` from a Nemotron-H config.json dict; ``overrides`` may set ``RUNTIME_FIELDS``."""
    if ARCHITECTURE not in (hf.get("architectures") or [ARCHITECTURE]) or \
            hf.get("model_type", "nemotron_h") != "nemotron_h":
        _fail(f"architectures={hf.get('architectures')} model_type={hf.get('model_type')!r}, expected "
              f"[{ARCHITECTURE!r}] and 'nemotron_h'")
    hf = dict(hf)
    for old, new in _ALIASES.items():
        if old in hf:
            hf[new] = hf.pop(old)
    check_hf_keys(hf, overrides, _READ_KEYS, _fail)
    check_fixed_values(hf, _FIXED_VALUES, _fail)
    limit = hf.get("time_step_limit", (0.0, math.inf))
    if len(limit) != 2 or _as_float(limit[0]) != 0.0 or _as_float(limit[1]) != math.inf:
        _fail(f"time_step_limit={limit!r} is not supported (expected [0.0, inf]: no clamp of the time step)")
    v = {**_DEFAULTS, **{k: hf[k] for k in _DEFAULTS if k in hf}}
    if v["topk_group"] != v["n_group"]:
        _fail(f"topk_group={v['topk_group']} < n_group={v['n_group']}: group-restricted routing is not supported")
    if v["moe_shared_expert_intermediate_size"] < 1:
        _fail(f"moe_shared_expert_intermediate_size={v['moe_shared_expert_intermediate_size']}: the model always "
              f"has a shared expert")
    kinds = layer_kinds(hf)
    values = dict(
        vocab_size=v["vocab_size"], d_model=v["hidden_size"], num_layers=len(kinds), block_pattern=kinds,
        num_heads=v["num_attention_heads"], num_kv_heads=v["num_key_value_heads"] or v["num_attention_heads"],
        head_dim=v["head_dim"], use_rope=False, qk_norm=False, rms_norm_eps=float(v["layer_norm_epsilon"]),
        tie_embeddings=False, max_seq_len=v["max_position_embeddings"], mlp_hidden_size=v["intermediate_size"],
        mlp_activation="squared_relu", num_experts=v["n_routed_experts"],
        num_experts_per_tok=v["num_experts_per_tok"], num_shared_experts=1,
        expert_hidden_size=v["moe_intermediate_size"],
        shared_expert_hidden_size=v["moe_shared_expert_intermediate_size"], moe_activation="squared_relu",
        router_score="sigmoid", norm_topk_prob=bool(v["norm_topk_prob"]),
        routed_scaling_factor=float(v["routed_scaling_factor"]), router_bias_update_rate=0.0, aux_loss_weight=0.0,
        router_z_loss_weight=0.0, mamba_num_heads=v["mamba_num_heads"], mamba_head_dim=v["mamba_head_dim"],
        mamba_state_size=v["ssm_state_size"], mamba_n_groups=v["n_groups"], mamba_conv_kernel=v["conv_kernel"],
        mamba_chunk_size=v["chunk_size"])
    values.update(overrides)
    return ModelConfig(**values)


# (our field, the value Nemotron-H has) for every switch the format fixes.
_FIXED = (("use_rope", False), ("qk_norm", False), ("tie_embeddings", False), ("mlp_activation", "squared_relu"),
          ("moe_activation", "squared_relu"), ("router_score", "sigmoid"), ("num_shared_experts", 1))


def config_to_hf(cfg: ModelConfig, base: Mapping[str, Any] | None, dtype: str) -> dict:
    """A Nemotron-H config.json dict for ``cfg`` (``dtype``: the tensors' dtype name, e.g. "bfloat16").

    ``base`` (the config.json this model was imported from, if any) keeps the keys we do not model and its
    spelling of the layer layout (``hybrid_override_pattern`` or ``layers_block_type``).
    """
    check_writable(cfg, _FIXED, "Nemotron-H")
    bad = sorted(set(cfg.layer_kinds) - set(_LAYER_TYPES))
    if bad:
        raise ValueError(f"ModelConfig layer kinds {bad} cannot be written as Nemotron-H (single-mixer "
                         f"{sorted(_LAYER_TYPES)} layers only)")
    if cfg.resolved_shared_hidden < 1:
        raise ValueError("ModelConfig without a shared expert cannot be written as Nemotron-H (which always has one)")
    out = dict(base or {})
    for old in _ALIASES:
        out.pop(old, None)
    out.pop("torch_dtype", None)
    types = [_LAYER_TYPES[kind] for kind in cfg.layer_kinds]
    if "hybrid_override_pattern" in out:
        out.pop("layers_block_type", None)
        out["hybrid_override_pattern"] = "".join({t: c for c, t in _PATTERN.items()}[t] for t in types)
    else:
        out["layers_block_type"] = types
    if "num_hidden_layers" in out:
        out["num_hidden_layers"] = cfg.num_layers
    out.update(
        architectures=[ARCHITECTURE], model_type="nemotron_h", vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.resolved_head_dim,
        max_position_embeddings=cfg.max_seq_len, intermediate_size=cfg.mlp_hidden_size,
        layer_norm_epsilon=cfg.rms_norm_eps, mamba_num_heads=cfg.mamba_num_heads,
        mamba_head_dim=cfg.mamba_head_dim, ssm_state_size=cfg.mamba_state_size, n_groups=cfg.mamba_n_groups,
        conv_kernel=cfg.mamba_conv_kernel, chunk_size=cfg.mamba_chunk_size, n_routed_experts=cfg.num_experts,
        num_experts_per_tok=cfg.num_experts_per_tok, moe_intermediate_size=cfg.expert_hidden_size,
        moe_shared_expert_intermediate_size=cfg.resolved_shared_hidden, n_shared_experts=1,
        routed_scaling_factor=cfg.routed_scaling_factor, norm_topk_prob=cfg.norm_topk_prob, n_group=1, topk_group=1,
        time_step_limit=[0.0, math.inf], dtype=dtype, **dict(_FIXED_VALUES))
    return out


FAMILY = Family(name="nemotron_h", architectures=(ARCHITECTURE,), config_from_hf=config_from_hf,
                config_to_hf=config_to_hf, rules=rules)
