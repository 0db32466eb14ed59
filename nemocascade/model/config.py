"""``ModelConfig``: every size and switch of the MoE transformer, validated on construction."""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

import numpy as np

BLOCK_KINDS = ("attention+moe", "attention+mlp", "attention", "moe", "mlp", "mamba")
ACTIVATIONS = ("swiglu", "squared_relu")
ROUTER_SCORES = ("softmax", "sigmoid")
DTYPES = ("float32", "bfloat16", "float64")
MOE_IMPLS = ("ragged", "dense")
KERNEL_IMPLS = ("xla", "auto", "tpu", "gpu", "interpret", "interpret_tpu")   # see pallas_kernels/*/ops.py
REMAT_POLICIES = ("none", "full", "dots")

# Field annotation -> (predicate, what is expected); checked for every field before the value checks.
_TYPE_CHECKS = {
    "int": (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "an int"),
    "int | None": (lambda v: v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool)),
                   "an int or None"),
    "float": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, (bool, np.bool_)), "a bool"),
    "str": (lambda v: isinstance(v, str), "a str"),
    "tuple[str, ...]": (lambda v: isinstance(v, tuple) and all(isinstance(k, str) for k in v),
                        "a sequence of str"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and switches of the decoder. Defaults are a tiny CPU model.

    Layers: ``block_pattern`` is tiled over ``num_layers`` (its length must divide it). Kinds:
    ``attention+moe`` / ``attention+mlp`` (pre-norm attention then pre-norm MoE / dense MLP, each with a
    residual) and single-mixer ``attention`` / ``moe`` / ``mlp`` / ``mamba`` layers (Nemotron-H style: one
    pre-norm mixer and a residual; ``mamba`` is the Mamba-2 mixer of ``mamba.py``, inner width
    ``mamba_num_heads * mamba_head_dim``).
    """

    vocab_size: int = 1024
    d_model: int = 128
    num_layers: int = 4
    block_pattern: tuple[str, ...] = ("attention+moe",)
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int | None = None          # None: d_model // num_heads (then num_heads must divide d_model)
    use_rope: bool = True                # Nemotron-H attention has no positional encoding
    rope_theta: float = 10000.0
    qk_norm: bool = False                # per-head RMSNorm of q and k (Qwen3)
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = False
    dtype: str = "float32"               # compute dtype (logits are returned in float32)
    param_dtype: str = "float32"
    max_seq_len: int = 2048
    # dense MLP (attention+mlp / mlp layers)
    mlp_hidden_size: int = 256
    mlp_activation: str = "swiglu"
    # MoE
    num_experts: int = 8
    num_experts_per_tok: int = 2
    num_shared_experts: int = 1
    expert_hidden_size: int = 128
    shared_expert_hidden_size: int | None = None   # None: num_shared_experts * expert_hidden_size
    moe_activation: str = "swiglu"
    router_score: str = "softmax"        # "sigmoid": + non-learned correction bias (aux-loss-free)
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    router_bias_update_rate: float = 0.0  # aux-loss-free bias nudging per step (0 disables)
    aux_loss_weight: float = 0.01
    router_z_loss_weight: float = 0.0
    # Mamba-2 (mamba layers); Nemotron-H names: mamba_num_heads, mamba_head_dim, ssm_state_size, n_groups,
    # conv_kernel, chunk_size
    mamba_num_heads: int = 4
    mamba_head_dim: int = 32
    mamba_state_size: int = 16
    mamba_n_groups: int = 1              # B and C are shared by mamba_num_heads / mamba_n_groups heads each
    mamba_conv_kernel: int = 4           # depthwise causal conv width (taps, current token included)
    mamba_chunk_size: int = 128          # SSD chunk length (tokens); any length works, chunks are padded
    moe_impl: str = "ragged"             # "dense" is a test-only reference path
    kernel_impl: str = "xla"             # expert matmul / attention / SSD scan backend
    remat: str = "none"
    # > 0: training and scoring compute the LM head and log-softmax over chunks of this many positions
    # (losses.head_logprobs_and_logsumexp), never holding f32 [B, T, V] logits; forward() is unchanged.
    logits_chunk_size: int = 0

    def __post_init__(self):
        def fail(msg):
            raise ValueError(f"ModelConfig: {msg}")
        if isinstance(self.block_pattern, str):
            raise TypeError(f"ModelConfig: block_pattern must be a sequence of block kinds such as "
                            f"('attention+moe',), got the string {self.block_pattern!r}")
        if isinstance(self.block_pattern, (list, tuple)):
            object.__setattr__(self, "block_pattern", tuple(self.block_pattern))
        for field in dataclasses.fields(self):
            check, expected = _TYPE_CHECKS[field.type]
            value = getattr(self, field.name)
            if not check(value):
                raise TypeError(f"ModelConfig: {field.name} must be {expected}, got {value!r} "
                                f"({type(value).__name__})")
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "max_seq_len",
                     "mlp_hidden_size", "num_experts", "num_experts_per_tok", "expert_hidden_size",
                     "mamba_num_heads", "mamba_head_dim", "mamba_state_size", "mamba_n_groups", "mamba_conv_kernel",
                     "mamba_chunk_size"):
            if int(getattr(self, name)) < 1:
                fail(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_shared_experts", "logits_chunk_size"):
            if getattr(self, name) < 0:
                fail(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.block_pattern:
            fail("block_pattern is empty")
        bad = [k for k in self.block_pattern if k not in BLOCK_KINDS]
        if bad:
            fail(f"unknown block kind(s) {bad}; valid kinds: {BLOCK_KINDS}")
        if self.num_layers % len(self.block_pattern):
            fail(f"block_pattern of length {len(self.block_pattern)} does not divide num_layers={self.num_layers}")
        if self.head_dim is None and self.d_model % self.num_heads:
            fail(f"num_heads={self.num_heads} does not divide d_model={self.d_model} (or set head_dim)")
        if self.head_dim is not None and self.head_dim < 1:
            fail(f"head_dim must be >= 1, got {self.head_dim}")
        if self.use_rope and self.resolved_head_dim % 2:
            fail(f"rotary embeddings need an even head dim, got {self.resolved_head_dim} (or set use_rope=False)")
        if self.num_heads % self.num_kv_heads:
            fail(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")
        if self.mamba_num_heads % self.mamba_n_groups:
            fail(f"mamba_n_groups={self.mamba_n_groups} must divide mamba_num_heads={self.mamba_num_heads}")
        if self.num_experts_per_tok > self.num_experts:
            fail(f"num_experts_per_tok={self.num_experts_per_tok} exceeds num_experts={self.num_experts}")
        for name, valid in (("mlp_activation", ACTIVATIONS), ("moe_activation", ACTIVATIONS),
                            ("router_score", ROUTER_SCORES), ("dtype", DTYPES), ("param_dtype", DTYPES),
                            ("moe_impl", MOE_IMPLS), ("kernel_impl", KERNEL_IMPLS), ("remat", REMAT_POLICIES)):
            if getattr(self, name) not in valid:
                fail(f"{name}={getattr(self, name)!r} is not one of {valid}")
        for name in ("rms_norm_eps", "rope_theta", "routed_scaling_factor"):
            if getattr(self, name) <= 0:
                fail(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("router_bias_update_rate", "aux_loss_weight", "router_z_loss_weight"):
            if getattr(self, name) < 0:
                fail(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.router_bias_update_rate > 0 and self.router_score != "sigmoid":
            fail(f"router_bias_update_rate={self.router_bias_update_rate} needs router_score='sigmoid' "
                 f"(only the sigmoid router selects experts with the correction bias)")
        if self.shared_expert_hidden_size is not None:
            if self.shared_expert_hidden_size < 0:
                fail(f"shared_expert_hidden_size must be >= 0, got {self.shared_expert_hidden_size}")
            if self.shared_expert_hidden_size > 0 and self.num_shared_experts == 0:
                fail(f"shared_expert_hidden_size={self.shared_expert_hidden_size} is set but num_shared_experts=0")

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        return tuple(self.block_pattern[i % len(self.block_pattern)] for i in range(self.num_layers))

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

    @property
    def resolved_shared_hidden(self) -> int:
        if self.shared_expert_hidden_size is not None:
            return self.shared_expert_hidden_size
        return self.num_shared_experts * self.expert_hidden_size

    @property
    def has_moe(self) -> bool:
        return any("moe" in kind for kind in self.layer_kinds)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def check_field_names(cls, names) -> None:
        """ValueError naming the unknown field(s) and listing the valid ones."""
        unknown = sorted(set(names) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {unknown}; valid fields: {list(cls.field_names())}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """From a mapping (a plain dict or an ``ml_collections.ConfigDict``'s ``to_dict()``)."""
        values = dict(values)
        cls.check_field_names(values)
        return cls(**values)

    def replace(self, **changes) -> "ModelConfig":
        self.check_field_names(changes)
        return dataclasses.replace(self, **changes)
