"""The pure-functional MoE transformer: params are plain pytrees, ``forward`` is one function."""
from nemocascade.model import presets
from nemocascade.model.config import ModelConfig
from nemocascade.model.counting import flops_per_token, param_count
from nemocascade.model.transformer import (abstract_params, forward, head_logits, hidden_states, init_cache,
                                           init_params, lm_head, logical_axes, segment_positions, trainable_mask,
                                           update_router_bias)

__all__ = ["ModelConfig", "abstract_params", "flops_per_token", "forward", "head_logits", "hidden_states", "init_cache", "init_params",
           "lm_head", "logical_axes", "param_count", "presets", "segment_positions", "trainable_mask",
           "update_router_bias"]
